//! systemd readiness protocol (`Type=notify` in deploy/systemd/bridge-host.service):
//! READY=1 once listening, STOPPING=1 when SIGTERM starts the drain.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

#[test]
fn serve_notifies_ready_and_stopping() {
    let t = tempfile::tempdir().unwrap();
    let notify = t.path().join("notify");
    let rx = UnixDatagram::bind(&notify).unwrap();
    // A guard against hanging forever, not a timing assertion.
    rx.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let sock = t.path().join("sb/ollama.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bridge-host"))
        .args(["serve", "--listen"])
        .arg(format!("unix:{}", sock.display()))
        .env("NOTIFY_SOCKET", &notify)
        .env("XDG_STATE_HOME", t.path())
        .env("HOME", t.path())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 128];
    let n = rx.recv(&mut buf).expect("READY=1 within the guard time");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(sock.exists(), "READY=1 comes after the listener is bound");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let n = rx.recv(&mut buf).expect("STOPPING=1 within the guard time");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(child.wait().unwrap().success());
}
