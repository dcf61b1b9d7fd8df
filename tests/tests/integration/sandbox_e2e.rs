//! The point of the project, end to end in a real network namespace: inside
//! `bwrap --unshare-net`, with only the socket directory bind-mounted, an agent reaches
//! Ollama (the test double) through bridge-guest on 127.0.0.1:11434 and bridge-host,
//! and cannot reach the host's Ollama port directly.

use bridge_tests::double::{Double, DoubleConfig};
use bridge_tests::harness::{
    bin, config, guest_bin, guest_env, guest_relays, json_output, socket, Host,
};

/// bubblewrap must be installed (CI's `.ci/run` installs it); a missing one fails loudly.
pub(crate) fn bwrap() -> std::path::PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/local/bin"] {
        let p = std::path::Path::new(dir).join("bwrap");
        if p.exists() {
            return p;
        }
    }
    panic!("bwrap not found: install bubblewrap (apt-get install -y bubblewrap); .ci/run does");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_in_bwrap_sandbox_reaches_ollama_only_through_the_bridge() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(
        &double.url(),
        &[("agent", "models = [\"qwen2.5:7b\", \"llama3.2:*\"]")],
        "",
    ))
    .await;
    let sock_dir = socket(&host, "agent").parent().unwrap().to_owned();

    // The double's port is live on the host's loopback...
    tokio::net::TcpStream::connect(double.addr())
        .await
        .expect("double reachable from the host");

    let mut sandbox = tokio::process::Command::new(bwrap());
    let (k, v) = guest_env();
    sandbox
        .env(k, v)
        .args([
            "--unshare-net",
            "--die-with-parent",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/run",
        ])
        .arg("--bind")
        .arg(&sock_dir)
        .arg("/run/ollama-bridge")
        .arg("--")
        .arg(guest_bin())
        .args([
            "run",
            "--connect",
            "unix:/run/ollama-bridge/ollama.sock",
            "--",
        ])
        .arg(bin("sandbox-probe"))
        .arg("--direct")
        .arg(double.addr().port().to_string());
    let (v, stderr) = json_output(&mut sandbox, "the probe in the bwrap sandbox").await;

    assert_probe_reached_ollama_only_through_the_bridge(&v);
    assert!(
        stderr.contains("relaying 127.0.0.1:11434 -> unix:/run/ollama-bridge/ollama.sock"),
        "{stderr}"
    );
    // Each mode is what this run tests (OLLAMA_BRIDGE_TEST_GUEST_MODE).
    assert_eq!(
        stderr.contains("hand-off agreed"),
        !guest_relays(),
        "{stderr}"
    );

    // What reached Ollama came from bridge-host, and the host recorded who asked.
    assert_eq!(double.requests().len(), 2, "tags and the allowed chat");
    let audit = host.audit_records();
    assert_eq!(audit.len(), 3);
    assert!(
        audit
            .iter()
            .all(|r| r["sandbox"] == "agent" && r["peer"]["uid"].is_u64()),
        "{audit:?}"
    );
}

/// What sandbox-probe printed when it ran in a network namespace of its own, behind
/// bridge-guest and a sandbox allowing qwen2.5:7b and llama3.2:* of the default double:
/// listing and chat through the bridge, the other model refused, the host's port closed.
pub(crate) fn assert_probe_reached_ollama_only_through_the_bridge(v: &serde_json::Value) {
    assert_eq!(v["tags_status"], 200, "{v}");
    assert_eq!(
        v["models"],
        serde_json::json!(["qwen2.5:7b", "llama3.2:3b"]),
        "{v}"
    );
    assert_eq!(v["chat_status"], 200, "{v}");
    assert!(v["chat_lines"].as_u64().unwrap() > 2, "{v}");
    assert_eq!(v["chat_done"], true, "{v}");
    assert!(
        v["chat_text"]
            .as_str()
            .unwrap()
            .contains("hello from the sandbox"),
        "{v}"
    );
    assert_eq!(v["denied_status"], 403, "{v}");
    // The double's port, live on the host's loopback, is not reachable from inside.
    assert!(v["direct"].as_str().unwrap().starts_with("failed:"), "{v}");
}
