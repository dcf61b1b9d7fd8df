//! The bridge-guest command line (the README's reference).

use std::process::Command;

fn guest() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bridge-guest"));
    c.env_remove("OLLAMA_HOST")
        .env_remove("OLLAMA_BRIDGE_LISTEN")
        .env_remove("OLLAMA_BRIDGE_CONNECT");
    c
}

#[test]
fn run_exits_with_the_commands_status() {
    let out = guest()
        .args(["--listen", "127.0.0.1:0", "run", "--", "sh", "-c", "exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("relaying 127.0.0.1:"), "{err}");
}

#[test]
fn run_points_ollama_clients_at_the_relay() {
    let out = guest()
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--",
            "sh",
            "-c",
            "echo $OLLAMA_HOST",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let host = String::from_utf8_lossy(&out.stdout);
    assert!(host.trim().starts_with("http://127.0.0.1:"), "{host}");
    assert_ne!(host.trim(), "http://127.0.0.1:0");
}

#[test]
fn run_reports_a_missing_command_with_127() {
    let out = guest()
        .args(["--listen", "127.0.0.1:0", "run", "--", "/nonexistent/agent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
}

#[test]
fn env_overrides_are_read() {
    let out = guest()
        .env("OLLAMA_BRIDGE_LISTEN", "127.0.0.1:0")
        .env("OLLAMA_BRIDGE_CONNECT", "unix:/nonexistent/x.sock")
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("-> unix:/nonexistent/x.sock"), "{err}");
}

#[test]
fn a_busy_listen_address_is_a_clear_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let out = guest()
        .args(["--listen", &addr, "run", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

#[test]
fn a_bad_connect_address_is_refused() {
    let out = guest()
        .args(["--connect", "tcp:1.2.3.4:5", "run", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("expected unix:/path or vsock:CID:PORT"),
        "{err}"
    );
}

#[test]
fn run_help_shows_the_separator_and_the_exit_codes() {
    let out = guest().args(["run", "--help"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("-- COMMAND [ARGS]..."), "{text}");
    for code in ["126", "127", "128+N", "69"] {
        assert!(text.contains(code), "{code}: {text}");
    }
}

#[test]
fn doctor_help_has_the_exit_code_table() {
    let out = guest().args(["doctor", "--help"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Exit codes"), "{text}");
    for code in 0..=8 {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{code}  "))),
            "{code}: {text}"
        );
    }
}
