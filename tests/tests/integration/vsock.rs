//! microVM transports. Firecracker and Cloud Hypervisor: the guest dials CID 2 port P and
//! the VMM connects to the host's unix socket `<uds_path>_P` — driven here exactly as the
//! VMM would. AF_VSOCK: the listener is bound here; the connect path needs a vsock
//! transport these machines lack, so its test is `#[ignore]`d with the command to run it.

use bridge_tests::double::{Double, DoubleConfig};
use bridge_tests::harness::{config, repo, Guest, Host};
use bridge_tests::http::{collect, post, raw_unix, send_tcp};
use serde_json::{json, Value};

fn vsock_uds_config(upstream: &str) -> String {
    config(upstream, &[], "")
        + "[[sandbox]]\nname = \"vm1\"\nlisten = \"vsock-uds:{dir}/fc/v.sock_11434\"\nmodels = [\"qwen2.5:7b\"]\n"
}

#[tokio::test]
async fn vsock_uds_listener_serves_connections_as_firecracker_makes_them() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&vsock_uds_config(&double.url())).await;
    let uds = host.path("fc/v.sock_11434");
    assert_eq!(
        host.ready,
        [format!(
            "listening sandbox=vm1 on vsock-uds:{}",
            uds.display()
        )]
    );

    // What the VMM writes after the guest dialled CID 2 port 11434: the guest's HTTP.
    let chat = serde_json::to_vec(&json!({"model": "qwen2.5:7b", "stream": false, "messages": [{"role": "user", "content": "from the vm"}]})).unwrap();
    let mut raw = format!("POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1:11434\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", chat.len()).into_bytes();
    raw.extend(&chat);
    let r = raw_unix(&uds, &raw).await.unwrap().expect("an answer");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(
        v["message"]["content"]
            .as_str()
            .unwrap()
            .contains("from the vm"),
        "{v}"
    );

    let denied = b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 24\r\n\r\n{\"model\":\"llama3.3:70b\"}";
    let r = raw_unix(&uds, denied).await.unwrap().expect("an answer");
    assert_eq!(r.status, 403);

    // Policy and audit apply as on any listener; the peer is the VMM process.
    assert_eq!(double.requests().len(), 1);
    let audit = host.audit_records();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0]["sandbox"], "vm1");
    assert_eq!(audit[0]["decision"], "allow");
    assert_eq!(audit[1]["reason"], "model_not_allowed");
    assert_eq!(audit[0]["peer"]["pid"], std::process::id());
}

#[tokio::test]
async fn af_vsock_listener_binds_and_announces_its_port() {
    let double = Double::start(DoubleConfig::default()).await;
    // Port 4294967295 is VMADDR_PORT_ANY: the kernel picks a free port.
    let cfg = config(&double.url(), &[], "")
        + "[[sandbox]]\nname = \"vm\"\nlisten = \"vsock:4294967295\"\nvsock_cid = 3\n";
    let host = Host::start(&cfg).await;
    let line = &host.ready[0];
    let port: u32 = line
        .strip_prefix("listening sandbox=vm on vsock:")
        .expect(line)
        .parse()
        .unwrap();
    assert_ne!(port, u32::MAX);
}

/// Needs an AF_VSOCK transport that can reach this host's own listener, which these
/// machines lack (no vsock_loopback). Run it on a host with the module, or inside a VM
/// against its host, with:
///   sudo modprobe vsock_loopback && cargo test -p ollama-bridge-tests --test integration -- --ignored vsock::
#[tokio::test]
#[ignore = "needs the vsock_loopback transport: sudo modprobe vsock_loopback, then run with --ignored"]
async fn guest_relays_over_af_vsock_to_the_host() {
    let double = Double::start(DoubleConfig::default()).await;
    let cfg = config(&double.url(), &[], "")
        + "[[sandbox]]\nname = \"vm\"\nlisten = \"vsock:4294967295\"\nvsock_cid = 1\n";
    let host = Host::start(&cfg).await;
    let port = host.ready[0].rsplit(':').next().unwrap().to_owned();
    // CID 1 is VMADDR_CID_LOCAL: the loopback transport.
    let guest = Guest::start_with(&["--connect", &format!("vsock:1:{port}")]).await;
    let resp = send_tcp(
        guest.addr,
        post(
            "/api/chat",
            &json!({"model": "qwen2.5:7b", "stream": false, "messages": []}),
        ),
    )
    .await
    .unwrap();
    let (status, _, _) = collect(resp).await;
    assert_eq!(status, 200);
    assert_eq!(host.audit_records()[0]["peer"], json!({"cid": 1}));
}

#[test]
fn firecracker_recipe_agrees_with_its_listener() {
    let dir = repo().join("deploy/firecracker");
    let vsock: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("vsock.json")).unwrap()).unwrap();
    let toml = std::fs::read_to_string(dir.join("bridge.toml")).unwrap();
    let want = format!(
        "listen = \"vsock-uds:{}_11434\"",
        vsock["uds_path"].as_str().unwrap()
    );
    assert!(toml.contains(&want), "bridge.toml lacks {want}");
    let unit = std::fs::read_to_string(dir.join("bridge-guest.service")).unwrap();
    assert!(
        unit.contains("--connect vsock:2:11434"),
        "the guest dials CID 2, port 11434"
    );
}
