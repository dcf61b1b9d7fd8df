//! Least privilege (`[privileges]`): started as root, `serve` runs as an unprivileged
//! user with no supplementary groups, no capability in any set and `no_new_privs`, in
//! every thread, and still serves and audits; `run_as_root = true` keeps root; an
//! unknown user is a configuration error. bridge-guest needs no privileges at all.
//! These tests need root (CI runs as root); otherwise they fail saying so.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use bridge_tests::double::{Double, DoubleConfig};
use bridge_tests::harness::{bin, config, require_root, socket, Guest, Host};
use bridge_tests::http::{collect, post, req, send_tcp, send_unix};
use nix::unistd::{Group, User};
use serde_json::json;

const SANDBOX: &str = "models = [\"qwen2.5:7b\"]";

/// The `Key:` line of every thread of `pid` (what `/proc/PID/task/*/status` says).
fn per_thread(pid: u32, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task") {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key} in {status}"));
        out.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    assert!(!out.is_empty());
    out
}

/// Asserts one value of `key` for the process (its `/proc/PID/status`) and every thread.
pub(crate) fn assert_status(pid: u32, key: &str, want: &str) {
    let main = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = main
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {main}"));
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>().join(" "),
        want,
        "{key}"
    );
    for (i, got) in per_thread(pid, key).iter().enumerate() {
        assert_eq!(got, want, "{key} of thread {i}");
    }
}

/// Asserts the daemon runs as `user` with nothing left of root.
pub(crate) fn assert_dropped_to(host: &Host, user: &User) {
    let pid = host.child.id().expect("running");
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    assert_status(pid, "Uid", &format!("{uid} {uid} {uid} {uid}"));
    assert_status(pid, "Gid", &format!("{gid} {gid} {gid} {gid}"));
    assert_status(pid, "Groups", ""); // supplementary groups cleared, not even the gid
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_status(pid, set, "0000000000000000");
    }
    assert_status(pid, "NoNewPrivs", "1");
    assert!(
        host.log()
            .contains(&format!("running as user {}", user.name)),
        "{}",
        host.log()
    );
}

pub(crate) fn user(name: &str) -> User {
    User::from_name(name).unwrap().expect("user exists")
}

/// `setpriv`'s `--reuid=` and `--regid=` arguments for `u` and its primary group.
pub(crate) fn setpriv_ids(u: &User) -> (String, String) {
    let group = Group::from_gid(u.gid).unwrap().expect("the user's group");
    (
        format!("--reuid={}", u.name),
        format!("--regid={}", group.name),
    )
}

#[tokio::test]
async fn a_daemon_started_as_root_drops_to_the_configured_user_and_still_serves() {
    require_root("it starts bridge-host as root");
    let double = Double::start(DoubleConfig::default()).await;
    let nobody = user("nobody");
    let text = config(
        &double.url(),
        &[("agent", SANDBOX)],
        "[privileges]\nuser = \"nobody\"\n",
    );
    // Started with supplementary groups, which must go.
    let wrapper = [setpriv(), "--groups=4,27"];
    let host = Host::start_wrapped(tempfile::tempdir().unwrap(), &text, &wrapper, &[]).await;
    assert_dropped_to(&host, &nobody);

    let chat = json!({"model": "qwen2.5:7b", "stream": false, "messages": [{"role": "user", "content": "hi"}]});
    let sock = socket(&host, "agent");
    let (status, _, body) =
        collect(send_unix(&sock, post("/api/chat", &chat)).await.unwrap()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let recs = host.audit_records();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["path"], "/api/chat");
    assert_eq!(recs[0]["status"], 200);
    assert_eq!(recs[0]["decision"], "allow");
}

#[tokio::test]
async fn without_a_privileges_section_root_drops_to_the_default_user() {
    require_root("it starts bridge-host as root");
    let double = Double::start(DoubleConfig::default()).await;
    let want = User::from_name("ollama-bridge")
        .unwrap()
        .unwrap_or_else(|| user("nobody"));
    let text = config(&double.url(), &[("agent", SANDBOX)], "");
    assert!(!text.contains("[privileges]"));
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start_exact(dir, &text, &[]).await;
    assert_dropped_to(&host, &want);
    let sock = socket(&host, "agent");
    let (status, _, _) =
        collect(send_unix(&sock, req("GET", "/api/tags", "")).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(host.audit_records().len(), 1);
}

#[tokio::test]
async fn run_as_root_keeps_root_with_a_warning_and_no_new_privs() {
    require_root("it starts bridge-host as root");
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(
        &double.url(),
        &[("agent", SANDBOX)],
        "[privileges]\nrun_as_root = true\n",
    ))
    .await;
    let pid = host.child.id().unwrap();
    assert_status(pid, "Uid", "0 0 0 0");
    assert_status(pid, "NoNewPrivs", "1");
    assert_ne!(per_thread(pid, "CapEff")[0], "0000000000000000");
    let log = host.log();
    assert!(
        log.contains("WARN") && log.contains("run_as_root = true"),
        "{log}"
    );
}

#[test]
fn an_unknown_user_is_a_configuration_error() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("bridge.toml");
    let text = config("http://127.0.0.1:1", &[("agent", SANDBOX)], "")
        .replace("{dir}", &t.path().display().to_string())
        + "[privileges]\nuser = \"no-such-user-xyz\"\n";
    std::fs::write(&f, text).unwrap();
    for cmd in ["serve", "check-config"] {
        let out = Command::new(bin("bridge-host"))
            .args([cmd, "--config"])
            .arg(&f)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{cmd}: {err}");
        assert!(
            err.contains("[privileges] user \"no-such-user-xyz\" does not exist on this host"),
            "{cmd}: {err}"
        );
        assert!(err.contains(&format!("{}:", f.display())), "{err}");
    }
    assert!(!t.path().join("agent").exists(), "nothing was bound");
}

#[tokio::test]
async fn after_the_drop_reload_works_a_failed_audit_reopen_says_so_and_the_daemon_keeps_serving() {
    require_root("it starts bridge-host as root");
    let double = Double::start(DoubleConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // The service user must be able to reach the audit directory the daemon creates.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = |sandboxes: &[(&str, &str)]| {
        config(
            &double.url(),
            sandboxes,
            "[privileges]\nuser = \"nobody\"\n",
        )
        .replace("{dir}/audit.jsonl", "{dir}/log/audit.jsonl")
    };
    let mut host = Host::start_in(dir, &cfg(&[("agent", SANDBOX)]), &[]).await;
    assert_dropped_to(&host, &user("nobody"));
    let sock = socket(&host, "agent");
    let tags = || req("GET", "/api/tags", "");

    // The audit directory it created belongs to the service user: rotation works.
    let log_dir = host.path("log");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&log_dir).unwrap()),
        65534
    );
    collect(send_unix(&sock, tags()).await.unwrap()).await;
    std::fs::rename(log_dir.join("audit.jsonl"), log_dir.join("audit.jsonl.1")).unwrap();
    // A listener in a directory only root may write to: the privileged monitor opens it
    // (tests/tests/integration/monitor.rs has the rest).
    host.reconfigure(&cfg(&[("agent", SANDBOX), ("late", SANDBOX)]));
    let line = host.wait_line("reload").await;
    assert_eq!(
        line,
        "reloaded configuration: 1 sandbox(es) kept, added [late], removed []"
    );
    let (status, _, _) = collect(send_unix(&sock, tags()).await.unwrap()).await;
    assert_eq!(status, 200, "still serving");
    let reopened = std::fs::read_to_string(log_dir.join("audit.jsonl")).unwrap();
    assert_eq!(
        reopened.lines().count(),
        1,
        "the reopened file has the new record"
    );

    // An audit directory the service user cannot write: the reopen fails, said clearly,
    // and records keep going to the open file.
    std::os::unix::fs::chown(&log_dir, Some(0), Some(0)).unwrap();
    std::fs::rename(log_dir.join("audit.jsonl"), log_dir.join("audit.jsonl.2")).unwrap();
    host.signal(nix::sys::signal::Signal::SIGHUP);
    host.wait_line("reloaded configuration").await;
    collect(send_unix(&sock, tags()).await.unwrap()).await;
    let log = host.log();
    assert!(
        log.contains("audit log reopen failed")
            && log.contains(&format!(
                "{} must be writable by that user",
                log_dir.display()
            )),
        "{log}"
    );
    let old = std::fs::read_to_string(log_dir.join("audit.jsonl.2")).unwrap();
    assert_eq!(old.lines().count(), 2, "kept writing to the open file");

    // SIGTERM: exits 0 even though the socket cannot be removed as nobody.
    host.signal(nix::sys::signal::Signal::SIGTERM);
    let status = host.child.wait().await.unwrap();
    assert!(status.success(), "{status}: {}", host.log());
}

/// `setpriv` (util-linux), which starts a process as another user with chosen capabilities.
pub(crate) fn setpriv() -> &'static str {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("setpriv is not installed: apt-get install -y util-linux")
}

#[tokio::test]
async fn started_unprivileged_with_cap_chown_it_chowns_then_sheds_it_in_every_thread() {
    // As under the systemd unit: User=ollama-bridge, AmbientCapabilities=CAP_CHOWN.
    require_root("setpriv starts bridge-host as nobody with CAP_CHOWN");
    let setpriv = setpriv();
    let double = Double::start(DoubleConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let nobody = user("nobody");
    let (reuid, regid) = setpriv_ids(&nobody);
    let text = config(
        &double.url(),
        &[(
            "agent",
            &format!(
                "{SANDBOX}
socket_owner = \"4242:4243\""
            ),
        )],
        "",
    );
    let wrapper = [
        setpriv,
        &reuid,
        &regid,
        "--clear-groups",
        "--inh-caps=+chown",
        "--ambient-caps=+chown",
    ];
    let host = Host::start_wrapped(dir, &text, &wrapper, &[]).await;
    let pid = host.child.id().unwrap();
    let uid = nobody.uid.as_raw();
    assert_status(pid, "Uid", &format!("{uid} {uid} {uid} {uid}"));
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_status(pid, set, "0000000000000000");
    }
    assert_status(pid, "NoNewPrivs", "1");
    // CAP_CHOWN was there while the socket and its directory were handed over.
    let sock = socket(&host, "agent");
    for p in [sock.as_path(), sock.parent().unwrap()] {
        let m = std::fs::metadata(p).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((m.uid(), m.gid()), (4242, 4243), "{}", p.display());
    }
    let (status, _, _) =
        collect(send_unix(&sock, req("GET", "/api/tags", "")).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(host.audit_records().len(), 1);

    // A restart (systemd's Restart= or `systemctl restart`): the directory now belongs to
    // 4242, mode 0750, and the stale socket is still in it. The new daemon takes the
    // directory back with CAP_CHOWN, replaces the socket, and hands the directory over.
    let mut host = host;
    host.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(host.child.wait().await.unwrap().success());
    assert!(
        sock.exists(),
        "the unprivileged daemon could not remove its socket"
    );
    let host = Host::start_wrapped(host.dir, &text, &wrapper, &[]).await;
    for p in [sock.as_path(), sock.parent().unwrap()] {
        let m = std::fs::metadata(p).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((m.uid(), m.gid()), (4242, 4243), "{}", p.display());
    }
    let (status, _, _) =
        collect(send_unix(&sock, req("GET", "/api/tags", "")).await.unwrap()).await;
    assert_eq!(status, 200);
    drop(host);
}

#[tokio::test]
async fn started_without_root_a_reload_says_what_it_cannot_do_and_does_the_rest() {
    // As under the systemd unit (User=, CAP_CHOWN shed once the sockets are chowned): no
    // privileged monitor, so a reload cannot set socket_owner. It must say so, as a
    // failure with what to do, and still apply what it can.
    require_root("setpriv starts bridge-host as nobody with CAP_CHOWN");
    let setpriv = setpriv();
    let double = Double::start(DoubleConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let nobody = user("nobody");
    let (reuid, regid) = setpriv_ids(&nobody);
    let wrapper = [
        setpriv,
        &reuid,
        &regid,
        "--clear-groups",
        "--inh-caps=+chown",
        "--ambient-caps=+chown",
    ];
    let cfg = |sandboxes: &[(&str, &str)]| config(&double.url(), sandboxes, "");
    let owned = format!("{SANDBOX}\nsocket_owner = \"4242:4243\"");
    let mut host = Host::start_wrapped(dir, &cfg(&[("agent", SANDBOX)]), &wrapper, &[]).await;
    assert!(
        host.log()
            .contains("reload (SIGHUP): this daemon runs as user nobody (uid 65534")
            && host.log().contains("cannot set socket_owner"),
        "it says at start what a reload can do: {}",
        host.log()
    );

    host.reconfigure(&cfg(&[
        ("agent", SANDBOX),
        ("owned", &owned),
        ("plain", SANDBOX),
    ]));
    let line = host.wait_line("reload").await;
    assert!(
        line.starts_with(
            "reload failed: sandbox \"owned\" was not opened: cannot set mode or owner of "
        ),
        "{line}"
    );
    assert!(
        line.contains("no privileged monitor")
            && line.contains("cannot set socket_owner")
            && line.contains("restart the daemon")
            && line
                .ends_with("the rest was applied: 1 sandbox(es) kept, added [plain], removed []"),
        "{line}"
    );
    assert!(
        host.log().contains("ERROR") && host.log().contains("reload failed: sandbox"),
        "{}",
        host.log()
    );
    let (status, _, _) = collect(
        send_unix(&socket(&host, "plain"), req("GET", "/api/tags", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_guest_relays_as_an_unprivileged_user() {
    require_root("setpriv starts bridge-guest as nobody");
    let setpriv = setpriv();
    let double = Double::start(DoubleConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let nobody = user("nobody");
    let owner = format!("socket_owner = \"{}:{}\"\n", nobody.uid, nobody.gid);
    let host = Host::start_in(
        dir,
        &config(
            &double.url(),
            &[("agent", &format!("{SANDBOX}\n{owner}"))],
            "",
        ),
        &[],
    )
    .await;
    let sock = socket(&host, "agent");
    let (reuid, regid) = setpriv_ids(&nobody);
    let connect = format!("unix:{}", sock.display());
    let mut guest = Guest::start_wrapped(
        &[
            setpriv,
            &reuid,
            &regid,
            "--clear-groups",
            "--inh-caps=-all",
            "--no-new-privs",
        ],
        &["--connect", &connect],
    )
    .await;
    let pid = guest.child.id().unwrap();
    assert_status(pid, "Uid", &format!("{0} {0} {0} {0}", nobody.uid));
    assert_status(pid, "CapEff", "0000000000000000");
    let (status, _, body) = collect(
        send_tcp(guest.addr, req("GET", "/api/tags", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let recs = host.audit_records();
    assert_eq!(recs[0]["peer"]["uid"], nobody.uid.as_raw(), "{recs:?}");
    guest.child.kill().await.unwrap();
}
