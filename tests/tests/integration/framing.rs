//! Request framing as sent, on every request of a connection: `Content-Length` with
//! `Transfer-Encoding` or a repeated `Content-Length` (which hyper resolves before the
//! service sees the head) is refused with 400 `bad_request` — also as the second request
//! of a keep-alive connection — with a record, nothing sent upstream, and the connection
//! closed. HTTP/1.0 keep-alive is honest: an answer that ends with the close says
//! `Connection: close`; one with a length keeps the connection and the next request on
//! it is answered and audited.

use bridge_tests::double::{Double, DoubleConfig};
use bridge_tests::harness::{config, socket, Host};
use bridge_tests::http::{raw_unix_until_close, read_until_close, response_on, RawResponse};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

const BODY: &str = r#"{"model":"qwen2.5:7b","messages":[],"stream":false}"#;

async fn start() -> (Double, Host) {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(&double.url(), &[("agent", "")], "")).await;
    (double, host)
}

/// A chat request with `headers` (CRLF-ended lines) and `body`.
fn chat(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{headers}\r\n{body}").into_bytes()
}

fn clean() -> Vec<u8> {
    chat(&format!("Content-Length: {}\r\n", BODY.len()), BODY)
}

/// The ambiguous heads, each with a body that would be allowed if framed either way.
fn ambiguous() -> Vec<(&'static str, Vec<u8>)> {
    let n = BODY.len();
    let chunked = format!("{n:x}\r\n{BODY}\r\n0\r\n\r\n");
    vec![
        (
            "Content-Length with Transfer-Encoding",
            chat(
                &format!(
                    "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                    chunked.len()
                ),
                &chunked,
            ),
        ),
        (
            "Transfer-Encoding (other case) before Content-Length",
            chat(
                &format!(
                    "transfer-encoding: Chunked\r\nCONTENT-LENGTH: {}\r\n",
                    chunked.len()
                ),
                &chunked,
            ),
        ),
        (
            "Content-Length twice, equal",
            chat(
                &format!("Content-Length: {n}\r\nContent-Length: {n}\r\n"),
                BODY,
            ),
        ),
        (
            "Content-Length twice, equal, other case",
            chat(
                &format!("content-length: {n}\r\nContent-length: {n}\r\n"),
                BODY,
            ),
        ),
    ]
}

fn assert_refused(what: &str, r: &RawResponse, host: &Host) {
    assert_eq!(
        r.status,
        400,
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    let msg = v["error"].as_str().unwrap();
    assert!(msg.starts_with("ollama-bridge: "), "{what}: {msg}");
    assert!(msg.contains("Content-Length"), "{what}: {msg}");
    assert_eq!(r.header("connection"), Some("close"), "{what}");
    let rec = host.audit_records().pop().unwrap();
    assert_eq!(
        (
            &rec["method"],
            &rec["path"],
            &rec["status"],
            &rec["reason"],
            &rec["decision"]
        ),
        (
            &"POST".into(),
            &"/api/chat".into(),
            &400.into(),
            &"bad_request".into(),
            &"deny".into()
        ),
        "{what}: {rec}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused_on_any_request_of_a_connection() {
    let (double, host) = start().await;
    let sock = socket(&host, "agent");
    for (what, bytes) in ambiguous() {
        // First on a connection.
        double.clear();
        let (r, _) = raw_unix_until_close(&sock, &bytes, false).await.unwrap();
        assert_refused(what, &r.expect("an answer"), &host);
        assert!(double.requests().is_empty(), "{what}: reached Ollama");

        // Second on a keep-alive connection, after a sound request.
        let mut s = UnixStream::connect(&sock).await.unwrap();
        s.write_all(&clean()).await.unwrap();
        let first = response_on(&mut s).await;
        assert_eq!(first.status, 200, "{what}");
        double.clear();
        s.write_all(&bytes).await.unwrap();
        let second = response_on(&mut s).await;
        assert_refused(what, &second, &host);
        read_until_close(&mut s).await;
        assert!(double.requests().is_empty(), "{what}: reached Ollama");
    }
    // Pipelined behind a sound request, in the same write.
    let (_, ambiguous) = &ambiguous()[0];
    double.clear();
    let both = [clean(), ambiguous.clone()].concat();
    let (_, all) = raw_unix_until_close(&sock, &both, false).await.unwrap();
    let text = String::from_utf8_lossy(&all);
    let ok = text.find("HTTP/1.1 200").expect("the first answered");
    let refused = text.find("HTTP/1.1 400").expect("the second refused");
    assert!(ok < refused, "{text}");
    assert_eq!(
        double.requests().len(),
        1,
        "only the sound request reached Ollama"
    );
    let rec = host.audit_records().pop().unwrap();
    assert_eq!(rec["reason"], "bad_request", "{rec}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_keep_alive_answers_are_framed_honestly() {
    let (double, host) = start().await;
    let sock = socket(&host, "agent");
    let get = b"GET /api/version HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n";

    // Relayed from Ollama (no length): ends with the close, and says so.
    let twice = [&get[..], &get[..]].concat();
    let (r, all) = raw_unix_until_close(&sock, &twice, false).await.unwrap();
    let r = r.expect("an answer");
    assert_eq!(r.status, 200);
    assert!(
        all.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&all)
    );
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert!(r.header("content-length").is_none() && r.header("transfer-encoding").is_none());
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.ends_with(r#""version":"0.33.0"}"#),
        "the body runs to the close: {text}"
    );
    assert_eq!(text.matches("HTTP/1.").count(), 1, "{text}");
    assert_eq!(double.requests().len(), 1);
    assert_eq!(host.audit_records().len(), 1);

    // The bridge's own answer has a length: the connection stays, the next request on it
    // is answered and audited.
    let pull = b"POST /api/pull HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\nContent-Length: 22\r\n\r\n{\"model\":\"qwen2.5:7b\"}";
    let mut s = UnixStream::connect(&sock).await.unwrap();
    s.write_all(pull).await.unwrap();
    let denied = response_on(&mut s).await;
    assert_eq!(denied.status, 403);
    assert_eq!(
        denied.header("connection"),
        Some("keep-alive"),
        "{denied:?}"
    );
    assert!(denied.header("content-length").is_some(), "{denied:?}");
    s.write_all(get).await.unwrap();
    let after = read_until_close(&mut s).await;
    assert!(
        after.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&after)
    );
    let recs = host.audit_records();
    let paths: Vec<_> = recs
        .iter()
        .map(|r| (r["path"].clone(), r["status"].clone()))
        .collect();
    assert_eq!(
        paths,
        [
            ("/api/version".into(), 200.into()),
            ("/api/pull".into(), 403.into()),
            ("/api/version".into(), 200.into())
        ]
    );
}
