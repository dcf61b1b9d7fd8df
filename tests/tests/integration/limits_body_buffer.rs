//! `max_body_buffer` end to end: a body being received holds its share of the sandbox's
//! budget (seen in `/_bridge/status`), a body that does not fit meanwhile gets 429
//! `rate_limited` (Ollama and OpenAI shapes), and the share comes back once the first
//! request is done. No sleeps: the test waits for the status document to show the bytes.

use std::path::Path;

use bridge_tests::double::{Double, DoubleConfig};
use bridge_tests::harness::{config, socket, Host};
use bridge_tests::http::{bridge_status, raw_unix_writing, response_on, wait_status, RawResponse};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

const MIB: usize = 1 << 20;

/// A chat request whose body is exactly `len` bytes (padded inside the message).
fn chat_body(len: usize) -> Vec<u8> {
    let head = br#"{"model":"qwen2.5:7b","stream":false,"messages":[{"role":"user","content":""#;
    let tail = br#""}]}"#;
    let mut b = head.to_vec();
    b.resize(len - tail.len(), b'x');
    b.extend_from_slice(tail);
    b
}

fn request(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Sends a chat request of `len` body bytes while reading the answer (a refused body is
/// not read: the write may fail once the daemon closes the connection).
async fn send(sock: &Path, path: &str, len: usize) -> RawResponse {
    raw_unix_writing(sock, request(path, &chat_body(len)), Vec::new(), 0)
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_beyond_max_body_buffer_get_429_until_the_budget_is_given_back() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(
        &double.url(),
        &[
            ("b", "max_body = \"1MiB\"\nmax_body_buffer = \"1MiB\""),
            ("other", "max_body = \"1MiB\"\nmax_body_buffer = \"1MiB\""),
        ],
        "",
    ))
    .await;
    let sock = socket(&host, "b");
    let st = bridge_status(&sock).await;
    assert_eq!(st["limits"]["max_body_buffer"], MIB as u64);
    assert_eq!(st["body_buffer_held"], 0);

    // Connection 1 declares 1 MiB and sends half of it: its share is the whole budget.
    let first = request("/api/chat", &chat_body(MIB));
    let (part, rest) = first.split_at(first.len() - MIB / 2);
    let mut one = UnixStream::connect(&sock).await.unwrap();
    one.write_all(part).await.unwrap();
    wait_status(&sock, "body_buffer_held", MIB as u64).await;

    // Meanwhile a 600 KiB body does not fit: 429 at once, naming the limit.
    let r = send(&sock, "/api/chat", 600 << 10).await;
    assert_eq!((r.status, r.header("retry-after")), (429, Some("1")));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    let msg = v["error"].as_str().unwrap();
    assert_eq!(
        msg,
        "ollama-bridge: sandbox \"b\" is already holding 1MiB of request bodies (max_body_buffer = 1MiB); retry shortly"
    );
    // On /v1/* in OpenAI's error shape.
    let r = send(&sock, "/v1/chat/completions", 600 << 10).await;
    assert_eq!(r.status, 429);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("max_body_buffer"), "{v}");
    // Another sandbox has its own budget.
    assert_eq!(
        send(&socket(&host, "other"), "/api/chat", 600 << 10)
            .await
            .status,
        200
    );

    // Connection 1 finishes its body and is served; its share comes back.
    one.write_all(rest).await.unwrap();
    let r = response_on(&mut one).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(bridge_status(&sock).await["body_buffer_held"], 0);
    assert_eq!(send(&sock, "/api/chat", 600 << 10).await.status, 200);
    assert_eq!(bridge_status(&sock).await["body_buffer_held"], 0);

    let recs = host.audit_records();
    let refused: Vec<&Value> = recs
        .iter()
        .filter(|r| r["sandbox"] == "b" && r["reason"] == "rate_limited")
        .collect();
    assert_eq!(refused.len(), 2, "{recs:?}");
    assert!(refused.iter().all(|r| r["status"] == 429));
    assert_eq!(refused[0]["path"], "/api/chat");
    let chats = double
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/chat")
        .count();
    assert_eq!(chats, 3, "the refused requests never reached Ollama");
}
