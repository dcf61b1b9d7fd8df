//! Big request bodies cost about their own size, not a tree many times larger: four
//! concurrent 32 MiB chat requests (allowed, and denied by model) raise bridge-host's
//! peak resident set (VmHWM) by at most 4 × 2 × 32 MiB, and what reaches Ollama is the
//! request as sent.

use bridge_tests::double::{Double, DoubleConfig};
use bridge_tests::harness::{config, peak_rss, socket, Host};
use bridge_tests::http::{collect, post, send_unix};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;

/// A chat request of about 32 MiB: one long message (with escapes, as real text has).
fn big_chat(model: &str) -> Value {
    let line = "The quick brown fox \"jumps\" over the lazy dog.\n";
    let content = line.repeat((32 * MIB as usize - 200) / (line.len() + 4));
    json!({"model": model, "stream": false, "messages": [{"role": "user", "content": content}]})
}

async fn four_at_once(sock: &std::path::Path, body: &Value) -> [u16; 4] {
    let one = || async {
        let resp = send_unix(sock, post("/api/chat", body)).await.unwrap();
        collect(resp).await.0
    };
    let (a, b, c, d) = tokio::join!(one(), one(), one(), one());
    [a, b, c, d]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_32_mib_requests_cost_at_most_twice_their_size() {
    let double = Double::start(DoubleConfig::default()).await;
    let sandbox = "models = [\"qwen2.5:7b\"]\nmax_body = \"33MiB\"\nmax_body_buffer = \"264MiB\"";
    let host = Host::start(&config(&double.url(), &[("big", sandbox)], "")).await;
    let sock = socket(&host, "big");
    let pid = host.child.id().unwrap();
    let before = peak_rss(pid);

    let denied = big_chat("llama3.3:70b");
    assert_eq!(four_at_once(&sock, &denied).await, [403; 4]);
    let allowed = big_chat("qwen2.5:7b");
    assert_eq!(four_at_once(&sock, &allowed).await, [200; 4]);

    let peak = peak_rss(pid);
    let added = peak.saturating_sub(before);
    eprintln!(
        "bridge-host VmHWM: {} MiB before, {} MiB after; added {} MiB (limit {} MiB)",
        before / MIB,
        peak / MIB,
        added / MIB,
        4 * 2 * 32
    );
    assert!(
        added <= 4 * 2 * 32 * MIB,
        "peak rose by {} MiB",
        added / MIB
    );

    // What reached Ollama is the request as sent (the long message byte for byte).
    let reached = double.requests();
    assert_eq!(reached.len(), 4);
    for r in &reached {
        let got: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(got, allowed);
    }
}
