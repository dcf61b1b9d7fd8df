//! The quick start says what an operator needs without a file: `--num-ctx`, `--audit`,
//! `--metrics`, `--socket-owner`, `--socket-mode` mean exactly their configuration keys,
//! and `bridge-host status --listen` probes a quick-start daemon.

use std::os::unix::fs::PermissionsExt;

use bridge_tests::double::{Double, DoubleConfig};
use bridge_tests::harness::{bin, Host};
use bridge_tests::http::{collect, send_unix};
use bridge_tests::native::chat_request;
use serde_json::Value;

#[tokio::test]
async fn quick_start_flags_mean_their_configuration_keys() {
    let double = Double::start(DoubleConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let up = double.url();
    let args = [
        "--listen",
        "unix:{dir}/q/ollama.sock",
        "--upstream",
        up.as_str(),
        "--num-ctx",
        "qwen2.5:*=12345",
        "--audit",
        "{dir}/quick-audit.jsonl",
        "--socket-mode",
        "0600",
    ];
    let host = Host::start_quick(dir, &[], &args, &[]).await;
    let sock = host.path("q/ollama.sock");
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600,
        "--socket-mode"
    );
    let (status, _, _) = collect(
        send_unix(&sock, chat_request("qwen2.5:7b", serde_json::json!({})))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let got = double.requests();
    assert_eq!(
        got[0].json().pointer("/options/num_ctx"),
        Some(&Value::from(12345)),
        "--num-ctx"
    );
    let audit = std::fs::read_to_string(host.path("quick-audit.jsonl")).unwrap();
    assert!(audit.contains("\"num_ctx_sent\":12345"), "--audit: {audit}");

    // bridge-host status finds the quick-start daemon by its listener (awaited: the
    // double answers the daemon's probe on this test's runtime).
    let out = tokio::process::Command::new(bin("bridge-host"))
        .args(["status", "--listen", &format!("unix:{}", sock.display())])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("default") && text.contains(" up "), "{text}");
}

#[test]
fn a_bad_quick_start_flag_says_what_to_write() {
    let out = std::process::Command::new(bin("bridge-host"))
        .args([
            "serve",
            "--listen",
            "unix:/nonexistent/q.sock",
            "--num-ctx",
            "qwen2.5:7b",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("write MODEL=N"), "{err}");
    let out = std::process::Command::new(bin("bridge-host"))
        .args([
            "serve",
            "--listen",
            "unix:/nonexistent/q.sock",
            "--num-ctx",
            "qwen2.5:7b=0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("command line:") && err.contains("context lengths"),
        "{err}"
    );
}
