//! The privileged monitor's own confinement. It stays root, since it must read a
//! root-only configuration and create and chown sockets anywhere the file says, but
//! keeps only the capabilities that needs, `no_new_privs` and the empty bounding set
//! of [`super::Plan::prepare`], dies with the daemon (`PR_SET_PDEATHSIG`), ignores the
//! terminal's and the service manager's stop signals (the daemon drains, then the
//! monitor follows it), and holds no descriptor but stderr and its socket.

use std::os::fd::{AsRawFd, RawFd};

use caps::{CapSet, Capability, CapsHashSet};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;

use super::{sys, PrivError};

/// What opening and handing over a listener needs, and nothing else (of what the monitor
/// has): chown the socket and its directory to `socket_owner` (`CAP_CHOWN`), reach and
/// write directories and files of other users (`CAP_DAC_OVERRIDE`,
/// `CAP_DAC_READ_SEARCH`, `CAP_FOWNER`), and bind an AF_VSOCK port below 1024
/// (`CAP_NET_BIND_SERVICE`).
pub const MONITOR_CAPS: [Capability; 5] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_FOWNER,
    Capability::CAP_NET_BIND_SERVICE,
];

/// The monitor's process name (`ps`, `/proc/PID/comm`).
const MONITOR_NAME: &std::ffi::CStr = c"bridge-monitor";

/// Confines the freshly forked monitor, whose parent (the daemon) is `parent`; `keep` is
/// its end of the socket. Fails if the daemon is already gone.
pub fn confine_monitor(parent: Pid, keep: RawFd) -> Result<(), PrivError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(sys("set the parent-death signal"))?;
    if nix::unistd::getppid() != parent {
        return Err(PrivError::Verify(
            "the daemon exited before its monitor started".into(),
        ));
    }
    let _ = nix::sys::prctl::set_name(MONITOR_NAME);
    let mut stop = SigSet::empty();
    for s in [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGQUIT,
    ] {
        stop.add(s);
    }
    stop.thread_block().map_err(sys("block the stop signals"))?;
    quiet_stdio()?;
    close_all_but(keep);
    // What it has of them: a service manager may have bounded the set already.
    let had = caps::read(None, CapSet::Permitted).map_err(super::caps("read the permitted set"))?;
    let keep_caps: CapsHashSet = MONITOR_CAPS
        .into_iter()
        .filter(|c| had.contains(c))
        .collect();
    for (set, step) in [
        (CapSet::Effective, "narrow the effective set"),
        (CapSet::Permitted, "narrow the permitted set"),
    ] {
        caps::set(None, set, &keep_caps).map_err(super::caps(step))?;
    }
    for (set, step) in [
        (CapSet::Inheritable, "clear the inheritable set"),
        (CapSet::Ambient, "clear the ambient set"),
    ] {
        caps::clear(None, set).map_err(super::caps(step))?;
    }
    let left =
        caps::read(None, CapSet::Permitted).map_err(super::caps("read the permitted set"))?;
    if left != keep_caps {
        return Err(PrivError::Verify(format!(
            "the monitor's permitted set is {left:?}"
        )));
    }
    Ok(())
}

/// stdin and stdout become /dev/null: stdout is the daemon's (its ready lines), and the
/// monitor never prints.
fn quiet_stdio() -> Result<(), PrivError> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| PrivError::Verify(format!("cannot open /dev/null: {e}")))?;
    for fd in [0, 1] {
        nix::unistd::dup2(null.as_raw_fd(), fd).map_err(sys("redirect stdio to /dev/null"))?;
    }
    Ok(())
}

/// Closes every descriptor inherited from whoever started the daemon, but stdio and `keep`.
fn close_all_but(keep: RawFd) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let open: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The directory's own descriptor is among them, and closed by now.
    for fd in open {
        if fd > 2 && fd != keep {
            let _ = nix::unistd::close(fd);
        }
    }
}
