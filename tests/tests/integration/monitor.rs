//! Reload after the privilege drop (the privileged monitor). Started as root, `serve`
//! forks a small monitor that stays root while the daemon drops every privilege; on
//! SIGHUP the monitor re-reads a configuration only root may read and opens the
//! listeners the reload adds (directory, socket, `socket_owner`), and hands them over.
//! The daemon keeps no capability, the monitor keeps no listener and only the
//! capabilities a listener needs, and each ends when the other does. A reload that fails
//! says `reload failed: ...` on stdout and in the log. These tests need root.

use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use bridge_tests::double::{Double, DoubleConfig};
use bridge_tests::harness::{config, require_root, socket, Host};
use bridge_tests::http::{collect, send_unix, GUARD};
use bridge_tests::native::chat_request;
use nix::sys::signal::Signal;
use nix::unistd::User;
use serde_json::json;

use crate::privileges::{assert_dropped_to, assert_status, user};

const SANDBOX: &str = "models = [\"qwen2.5:7b\"]";

/// A configuration whose audit log lives in a directory the daemon creates (and hands to
/// the user it drops to, so SIGHUP's reopen works).
fn cfg(url: &str, sandboxes: &[(&str, &str)]) -> String {
    config(url, sandboxes, "").replace("{dir}/audit.jsonl", "{dir}/log/audit.jsonl")
}

/// Starts the daemon as root with the default privilege drop and sandbox "agent", its
/// configuration file readable by root only (mode 0600).
async fn start(url: &str) -> Host {
    require_root("it starts bridge-host as root");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let host = Host::start_exact(dir, &cfg(url, &[("agent", SANDBOX)]), &[]).await;
    std::fs::set_permissions(&host.config, std::fs::Permissions::from_mode(0o600)).unwrap();
    host
}

/// Whom the daemon drops to without a `[privileges]` section.
fn default_user() -> User {
    User::from_name("ollama-bridge")
        .unwrap()
        .unwrap_or_else(|| user("nobody"))
}

/// The `Key:` value of `/proc/PID/status`, blanks collapsed.
fn status(pid: u32, key: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let v = s
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {s}"));
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The daemon's privileged monitor: its one child, named `bridge-monitor`.
fn monitor_of(host: &Host) -> u32 {
    let daemon = host.child.id().expect("running").to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap() {
        let Ok(pid) = e.unwrap().file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let ppid = s
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .map(str::trim);
        if ppid == Some(daemon.as_str()) {
            found.push((pid, status(pid, "Name")));
        }
    }
    assert_eq!(found.len(), 1, "one child: {found:?}");
    assert_eq!(found[0].1, "bridge-monitor");
    found[0].0
}

/// How many sockets `pid` holds, and how many of them listen (`/proc/net/unix` flags
/// `00010000`: `__SO_ACCEPTCON`).
fn sockets_of(pid: u32) -> (usize, usize) {
    let net = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap();
    let listening: HashSet<&str> = net
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(3) == Some(&"00010000")).then(|| f[6])
        })
        .collect();
    let (mut all, mut listen) = (0, 0);
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let Ok(target) = std::fs::read_link(fd.unwrap().path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
        {
            all += 1;
            listen += usize::from(listening.contains(inode));
        }
    }
    (all, listen)
}

/// The monitor: root, with only the capabilities a listener needs (CHOWN, DAC_OVERRIDE,
/// DAC_READ_SEARCH, FOWNER, NET_BIND_SERVICE), an empty bounding set, `no_new_privs`, one
/// thread, and one socket (to the daemon), which does not listen.
fn assert_minimal_monitor(pid: u32) {
    assert_status(pid, "Uid", "0 0 0 0");
    assert_status(pid, "CapEff", "000000000000040f");
    assert_status(pid, "CapPrm", "000000000000040f");
    for set in ["CapInh", "CapBnd", "CapAmb"] {
        assert_status(pid, set, "0000000000000000");
    }
    assert_status(pid, "NoNewPrivs", "1");
    assert_eq!(status(pid, "Threads"), "1");
    assert_eq!(sockets_of(pid), (1, 0), "sockets held, listening");
}

async fn chat(sock: &Path) -> u16 {
    let req = chat_request("qwen2.5:7b", json!({"stream": false}));
    collect(send_unix(sock, req).await.unwrap()).await.0
}

#[tokio::test]
async fn started_as_root_a_reload_reads_a_root_only_file_and_adds_and_removes_sandboxes() {
    let double = Double::start(DoubleConfig::default()).await;
    let url = double.url();
    let mut host = start(&url).await;
    let meta = std::fs::metadata(&host.config).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600), "root-only");
    let worker = default_user();
    assert_dropped_to(&host, &worker);
    let monitor = monitor_of(&host);
    assert_minimal_monitor(monitor);

    // Added: a sandbox in a new directory (the daemon may not create it) whose socket
    // and directory belong to socket_owner (the daemon may not chown).
    let owned = format!("{SANDBOX}\nsocket_owner = \"4242:4243\"");
    host.reconfigure(&cfg(&url, &[("agent", SANDBOX), ("second", &owned)]));
    let line = host.wait_line("reload").await;
    assert_eq!(
        line,
        "reloaded configuration: 1 sandbox(es) kept, added [second], removed []",
        "{}",
        host.log()
    );
    let second = socket(&host, "second");
    for p in [second.as_path(), second.parent().unwrap()] {
        let m = std::fs::metadata(p).unwrap();
        assert_eq!((m.uid(), m.gid()), (4242, 4243), "{}", p.display());
    }
    assert_eq!(chat(&second).await, 200, "the new socket answers");
    assert_eq!(chat(&socket(&host, "agent")).await, 200);
    // The daemon still holds no privilege.
    assert_dropped_to(&host, &worker);

    // Removed: the listener stops, and the monitor removes the socket the daemon cannot.
    host.reconfigure(&cfg(&url, &[("second", &owned)]));
    host.wait_line("stopped sandbox=agent").await;
    let line = host.wait_line("reload").await;
    assert_eq!(
        line,
        "reloaded configuration: 1 sandbox(es) kept, added [], removed [agent]"
    );
    let agent = socket(&host, "agent");
    assert!(!agent.exists(), "the removed sandbox's socket is gone");
    assert!(tokio::net::UnixStream::connect(&agent).await.is_err());
    assert_eq!(chat(&second).await, 200);
    let sandboxes: Vec<String> = host
        .audit_records()
        .iter()
        .map(|r| r["sandbox"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sandboxes, ["second", "agent", "second"]);
    // The monitor closed the listener it passed on (it answered requests since, so it
    // is past that point): it holds none.
    assert_minimal_monitor(monitor);
}

#[tokio::test]
async fn after_the_drop_a_failed_reload_says_so_and_the_running_configuration_keeps_serving() {
    let double = Double::start(DoubleConfig::default()).await;
    let url = double.url();
    let mut host = start(&url).await;
    let agent = socket(&host, "agent");

    // A broken file: nothing changes, and stdout and the log say why and what to do.
    host.reconfigure(&(cfg(&url, &[("agent", SANDBOX)]) + "\nbogus_key = 1\n"));
    let line = host.wait_line("reload").await;
    assert!(
        line.starts_with("reload failed: ")
            && line.contains("has 1 error(s)")
            && line.contains("bogus_key")
            && line.contains("bridge-host check-config --config")
            && line.ends_with("the running configuration stays"),
        "{line}"
    );
    assert!(host.log().contains("ERROR"), "{}", host.log());
    assert!(host.log().contains(&line), "the log says it too");
    assert_eq!(chat(&agent).await, 200, "the old configuration serves");

    // A sandbox even root cannot open (its path is a regular file): the rest applies,
    // and the line says what failed.
    std::fs::create_dir(host.path("blocked")).unwrap();
    std::fs::write(host.path("blocked/ollama.sock"), "precious").unwrap();
    host.reconfigure(&cfg(
        &url,
        &[("agent", SANDBOX), ("blocked", SANDBOX), ("third", SANDBOX)],
    ));
    let line = host.wait_line("reload").await;
    assert!(
        line.starts_with("reload failed: sandbox \"blocked\" was not opened: ")
            && line.contains("exists and is not a socket")
            && line
                .ends_with("the rest was applied: 1 sandbox(es) kept, added [third], removed []"),
        "{line}"
    );
    assert_eq!(
        std::fs::read_to_string(host.path("blocked/ollama.sock")).unwrap(),
        "precious"
    );
    assert_eq!(chat(&socket(&host, "third")).await, 200);
    assert_eq!(chat(&agent).await, 200);
}

#[tokio::test]
async fn the_monitor_and_the_daemon_end_together() {
    let double = Double::start(DoubleConfig::default()).await;
    let url = double.url();

    // SIGTERM: the daemon drains and exits 0; its monitor has exited (and been reaped).
    let mut host = start(&url).await;
    let monitor = monitor_of(&host);
    host.signal(Signal::SIGTERM);
    let status = tokio::time::timeout(GUARD, host.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}: {}", host.log());
    assert!(
        !Path::new(&format!("/proc/{monitor}")).exists(),
        "the monitor is gone"
    );

    // A monitor that dies: the daemon could no longer reload, so it stops (exit 1), and
    // says why.
    let mut host = start(&url).await;
    let monitor = monitor_of(&host);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(monitor as i32), Signal::SIGKILL).unwrap();
    let status = tokio::time::timeout(GUARD, host.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(1), "{}", host.log());
    assert!(
        host.log()
            .contains(&format!("the privileged monitor (pid {monitor}) is gone")),
        "{}",
        host.log()
    );

    // A daemon that dies: its monitor dies with it (PR_SET_PDEATHSIG), though nobody
    // closes anything.
    let mut host = start(&url).await;
    let monitor = monitor_of(&host);
    host.child.kill().await.unwrap();
    tokio::time::timeout(GUARD, async {
        // Gone, or a zombie waiting for whoever adopted it.
        while std::fs::read_to_string(format!("/proc/{monitor}/status"))
            .is_ok_and(|s| !s.contains("State:\tZ"))
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the monitor outlived the daemon"));
}
