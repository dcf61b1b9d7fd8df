//! The privileged monitor, as OpenSSH and nginx have one. Started as root, `serve` forks
//! it before the async runtime and any thread start; the daemon itself (the worker, the
//! process that faces sandboxes, whose pid systemd and `kill -HUP` know) then drops every
//! privilege. On SIGHUP the worker asks the monitor to re-read the configuration file
//! (which may be readable by root only) and to open the listeners the reload adds
//! (directory, socket, mode, `socket_owner`); they come back over a socketpair
//! (SCM_RIGHTS), and the worker serves them. Each ends when the other does.
//!
//! Layout: `wire.rs` (the messages), `privileged.rs` (the monitor's loop), `client.rs`
//! (the worker's side).

mod client;
mod privileged;
mod wire;

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use protocol::config::{Config, DefaultsEnv};

pub use client::{Client, MonitorError};

use crate::os::fdpass;
use crate::os::sys::{fork_single_threaded, Forked};

/// The longest wait for the monitor to confine itself at start.
const HELLO_WAIT: Duration = Duration::from_secs(10);

/// The forked monitor, before the runtime starts.
#[derive(Debug)]
pub struct Handle {
    pid: Pid,
    sock: OwnedFd,
}

/// Forks the monitor, which re-reads `path` (parsed in `env`, the environment the
/// running configuration was resolved in) and opens listeners for as long as the
/// daemon runs. Must run while the process has a single thread (it refuses otherwise);
/// `started` is the configuration the daemon starts with.
pub fn spawn(path: &Path, env: &DefaultsEnv, started: &Config) -> std::io::Result<Handle> {
    let (ours, theirs) = fdpass::pair()?;
    let parent = nix::unistd::getpid();
    match fork_single_threaded()? {
        Forked::Child => {
            drop(ours);
            privileged::run(theirs, parent, path.to_owned(), env.clone(), started)
        }
        Forked::Parent(pid) => {
            drop(theirs);
            let sock = await_hello(pid, ours)?;
            tracing::info!(pid = pid.as_raw(), file = %path.display(), "started the privileged monitor: on SIGHUP it re-reads the configuration and opens new listeners as root");
            Ok(Handle { pid, sock })
        }
    }
}

/// Waits (at most [`HELLO_WAIT`]) until the monitor says it is confined and serving, so
/// a monitor that cannot start stops the daemon before it binds anything.
fn await_hello(pid: Pid, sock: OwnedFd) -> std::io::Result<OwnedFd> {
    use std::io::{Error, ErrorKind};
    // A std socket type only to set SO_RCVTIMEO; the descriptor stays a SEQPACKET socket.
    let timed = std::os::unix::net::UnixDatagram::from(sock);
    timed.set_read_timeout(Some(HELLO_WAIT))?;
    let hello = fdpass::recv(timed.as_fd(), wire::MAX_REQUEST, false).map_err(|e| {
        let why = match e.kind() {
            ErrorKind::UnexpectedEof => "it exited (its log line above says why)".to_owned(),
            ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                format!("it did not answer within {}s", HELLO_WAIT.as_secs())
            }
            _ => e.to_string(),
        };
        Error::other(format!(
            "the privileged monitor (pid {pid}) did not start: {why}"
        ))
    })?;
    match wire::decode::<wire::Reply>(&hello.0) {
        Ok(wire::Envelope {
            id: 0,
            body: wire::Reply::Done,
        }) => {}
        other => {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!("the privileged monitor (pid {pid}) greeted with {other:?}"),
            ))
        }
    }
    timed.set_read_timeout(None)?;
    Ok(OwnedFd::from(timed))
}

impl Handle {
    /// The monitor's process id.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The worker's side of the socket, in the runtime.
    pub fn client(self) -> std::io::Result<Client> {
        Client::new(self.pid, self.sock)
    }
}

/// Waits (at most `wait`) for the monitor to exit once the worker's end of the socket
/// is closed, so it leaves no zombie behind. It dies with the worker anyway
/// (`PR_SET_PDEATHSIG`).
pub fn reap(pid: Pid, wait: Duration) {
    let deadline = Instant::now() + wait;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(WaitStatus::StillAlive) => {
                tracing::warn!(
                    pid = pid.as_raw(),
                    "the privileged monitor has not exited yet; it is killed when the daemon exits"
                );
                return;
            }
            Ok(status) => {
                tracing::debug!(?status, "the privileged monitor exited");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "the privileged monitor was already reaped");
                return;
            }
        }
    }
}
