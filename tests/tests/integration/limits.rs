//! Per-sandbox limits over real sockets: a slowloris head is cut at
//! `request_header_timeout` while the listener keeps serving, an idle keep-alive
//! connection is closed at `keepalive_timeout`, `max_concurrent` (with and without
//! `queue_timeout`) and `requests_per_minute` answer 429 for one sandbox while another
//! is served, and head limits answer 431 with an audit record. No sleeps: every wait is
//! for an event (a close, a chunk, a status value).

use bridge_tests::double::{Double, DoubleConfig, Script};
use bridge_tests::harness::{config, socket, Host};
use bridge_tests::http::{
    bridge_status, collect, next_data, raw_unix, raw_unix_until_close, read_until_close,
    response_on, send_unix, wait_status, GET_VERSION,
};
use bridge_tests::native::chat_request;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

fn records_with(host: &Host, reason: &str) -> Vec<Value> {
    host.audit_records()
        .into_iter()
        .filter(|r| r["reason"] == reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_head_is_cut_at_the_header_timeout_and_others_are_served() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(
        &double.url(),
        &[("slow", "request_header_timeout = \"1s\"")],
        "",
    ))
    .await;
    let sock = socket(&host, "slow");
    let mut loris = UnixStream::connect(&sock).await.unwrap();
    loris
        .write_all(b"POST /api/chat HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();

    // Meanwhile the same listener serves others.
    let r = raw_unix(&sock, GET_VERSION)
        .await
        .unwrap()
        .expect("an answer");
    assert_eq!(r.status, 200);

    // The daemon closes the slow connection by itself (no answer, or a 408).
    let got = read_until_close(&mut loris).await;
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let recs = records_with(&host, "request_timeout");
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["method"], "POST");
    assert_eq!(recs[0]["path"], "/api/chat");
    assert_eq!(recs[0]["decision"], "deny");
    assert_eq!(recs[0]["status"], 0);

    // A body that stops arriving gets 408 after the same time.
    let mut loris = UnixStream::connect(&sock).await.unwrap();
    loris
        .write_all(b"POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":")
        .await
        .unwrap();
    let r = response_on(&mut loris).await;
    assert_eq!(r.status, 408);
    assert!(String::from_utf8_lossy(&r.body).contains("request_header_timeout"));
    let recs = records_with(&host, "request_timeout");
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(recs[1]["status"], 408);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_at_the_keepalive_timeout() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(
        &double.url(),
        // The header timeout is long: only keepalive_timeout can end this connection
        // within the guard time.
        &[
            (
                "ka",
                "keepalive_timeout = \"1s\"\nrequest_header_timeout = \"10m\"",
            ),
            ("nka", "keepalive_timeout = \"0s\""),
        ],
        "",
    ))
    .await;
    let mut s = UnixStream::connect(socket(&host, "ka")).await.unwrap();
    s.write_all(GET_VERSION).await.unwrap();
    let r = response_on(&mut s).await;
    assert_eq!(r.status, 200);
    assert_ne!(r.header("connection"), Some("close"), "kept alive");
    // Then nothing: the daemon ends the idle connection.
    assert!(read_until_close(&mut s).await.is_empty());
    let recs = host.audit_records();
    assert_eq!(recs.len(), 1, "an idle close is not a request: {recs:?}");

    // "0s" turns keep-alive off: the answer says so and the connection ends with it.
    let mut s = UnixStream::connect(socket(&host, "nka")).await.unwrap();
    s.write_all(GET_VERSION).await.unwrap();
    let r = response_on(&mut s).await;
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(read_until_close(&mut s).await.is_empty());
}

async fn held_stream(sock: &std::path::Path) -> hyper::body::Incoming {
    let resp = send_unix(sock, chat_request("qwen2.5:7b", json!({"stream": true})))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    next_data(&mut body).await.expect("first chunk");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_at_its_concurrency_limit_gets_429_while_another_is_served() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(
        &double.url(),
        &[
            ("a", "max_concurrent = 1"),
            ("b", ""),
            ("q", "max_concurrent = 1\nqueue_timeout = \"10m\""),
            ("r", "max_concurrent = 1\nqueue_timeout = \"50ms\""),
        ],
        "",
    ))
    .await;
    let (a, b, q, r) = (
        socket(&host, "a"),
        socket(&host, "b"),
        socket(&host, "q"),
        socket(&host, "r"),
    );
    double.set_script(Script {
        gated: true,
        ..Script::default()
    });
    // Each held stream keeps its sandbox's one slot until the gate opens.
    let _held_a = held_stream(&a).await;
    let _held_r = held_stream(&r).await;
    let _held_q = held_stream(&q).await;

    let (s, h, body) = collect(
        send_unix(&a, chat_request("qwen2.5:7b", json!({"stream": false})))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 429);
    assert_eq!(h.get("retry-after").unwrap(), "1");
    let v: Value = serde_json::from_slice(&body).unwrap();
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.starts_with("ollama-bridge: ") && msg.contains("max_concurrent"),
        "{msg}"
    );

    // Sandbox b is not slowed by a.
    let (s, _, _) = collect(
        send_unix(&b, chat_request("qwen2.5:7b", json!({"stream": false})))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);

    // r waits 50 ms for its slot, then gets 429 naming queue_timeout.
    let (s, h, body) = collect(
        send_unix(&r, chat_request("qwen2.5:7b", json!({"stream": false})))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 429);
    assert!(h.contains_key("retry-after"));
    assert!(String::from_utf8_lossy(&body).contains("queue_timeout"));

    // q's request waits in the queue (seen in the status document) ...
    let waiting = tokio::spawn({
        let q = q.clone();
        async move {
            collect(
                send_unix(&q, chat_request("qwen2.5:7b", json!({"stream": false})))
                    .await
                    .unwrap(),
            )
            .await
        }
    });
    wait_status(&q, "queued", 1).await;
    assert_eq!(bridge_status(&q).await["limits"]["queue_timeout"], "600s");
    // A second waiter whose client leaves is taken out of the queue at once.
    let mut leaver = UnixStream::connect(&q).await.unwrap();
    let body = br#"{"model":"qwen2.5:7b","stream":false,"messages":[]}"#;
    let head = format!(
        "POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    leaver.write_all(head.as_bytes()).await.unwrap();
    leaver.write_all(body).await.unwrap();
    wait_status(&q, "queued", 2).await;
    drop(leaver);
    wait_status(&q, "queued", 1).await;
    // ... and is served once the held stream ends and frees the slot.
    double.release(10_000);
    let (s, _, _) = waiting.await.unwrap();
    assert_eq!(s, 200);

    let left = records_with(&host, "client_closed");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        (&left[0]["sandbox"], &left[0]["status"]),
        (&json!("q"), &json!(0))
    );
    let limited = records_with(&host, "rate_limited");
    let mut who: Vec<&str> = limited
        .iter()
        .map(|r| r["sandbox"].as_str().unwrap())
        .collect();
    who.sort();
    assert_eq!(who, ["a", "r"], "{limited:?}");
    assert!(limited
        .iter()
        .all(|r| r["status"] == 429 && r["decision"] == "deny"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_minute_limits_one_sandbox_with_an_honest_retry_after() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(
        &double.url(),
        &[("metered", "requests_per_minute = 2"), ("free", "")],
        "",
    ))
    .await;
    let metered = socket(&host, "metered");
    for _ in 0..2 {
        let r = raw_unix(&metered, GET_VERSION).await.unwrap().unwrap();
        assert_eq!(r.status, 200);
    }
    let r = raw_unix(&metered, GET_VERSION).await.unwrap().unwrap();
    assert_eq!(r.status, 429);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    // One token per 30 s: the wait is at least 1 s and at most 30 s.
    assert!((1..=30).contains(&wait), "{wait}");
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains("requests_per_minute"), "{text}");
    let r = raw_unix(&socket(&host, "free"), GET_VERSION)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200, "another sandbox is unaffected");
    let recs = records_with(&host, "rate_limited");
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["sandbox"], "metered");
    let st = bridge_status(&metered).await;
    assert_eq!(st["limits"]["requests_per_minute"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_or_too_large_headers_get_431_and_a_record() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(
        &double.url(),
        &[("h", "max_headers = 10\nmax_header_bytes = \"8KiB\"")],
        "",
    ))
    .await;
    let sock = socket(&host, "h");
    let mut many = b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    for i in 0..11 {
        many.extend(format!("X-H{i}: {i}\r\n").bytes());
    }
    many.extend_from_slice(b"\r\n");
    let mut big = b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nX-Fill: ".to_vec();
    big.extend(vec![b'a'; 9 * 1024]);
    big.extend_from_slice(b"\r\n\r\n");
    for bytes in [&many, &big] {
        let (resp, _) = raw_unix_until_close(&sock, bytes, false).await.unwrap();
        assert_eq!(resp.map(|r| r.status), Some(431));
    }
    // Within both limits: served.
    let mut fine = b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    for i in 0..8 {
        fine.extend(format!("X-H{i}: {}\r\n", "b".repeat(500)).bytes());
    }
    fine.extend_from_slice(b"\r\n");
    assert_eq!(raw_unix(&sock, &fine).await.unwrap().unwrap().status, 200);

    let recs = records_with(&host, "too_large");
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert!(recs
        .iter()
        .all(|r| r["status"] == 431 && r["path"] == "/api/tags"));
    let st = bridge_status(&sock).await;
    assert_eq!(st["limits"]["max_headers"], 10);
    assert_eq!(st["limits"]["max_header_bytes"], 8192);
}
