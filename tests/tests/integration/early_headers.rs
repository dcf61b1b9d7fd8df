//! Issue 16, "No silent wait while Ollama loads a model": a streamed request whose
//! answer head Ollama has not sent within `[upstream] early_headers` gets the bridge's own
//! `200` and stream headers, then Ollama's stream, or its error in the stream's format.
//! The double holds its headers until told (`Script::hold_headers`): every "the headers
//! came while Ollama was still loading" is synchronised on the double, not on a clock.

use std::path::Path;
use std::time::{Duration, Instant};

use bridge_tests::double::{Double, DoubleConfig, Script};
use bridge_tests::harness::{config, socket, Host};
use bridge_tests::http::{collect, ndjson, post, send_unix, sse_events, GUARD, REQUEST_ID};
use http::Response;
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SANDBOX: &str = "models = [\"qwen2.5:7b\", \"llama3.2:*\"]\nendpoints = [\"chat\", \"generate\", \"openai\"]\nopenai_via_native = true";
const PASS: &str = "models = [\"qwen2.5:7b\", \"llama3.2:*\"]\nendpoints = [\"chat\", \"generate\", \"openai\"]\nopenai_via_native = false";
const WATCHED: &str = "models = [\"qwen2.5:7b\"]\nendpoints = [\"chat\"]\nmax_concurrent = 4\nqueue_timeout = \"30s\"";
const THRESHOLD: Duration = Duration::from_millis(300);

/// A host over `double` with `early_headers` (and the other upstream keys of
/// [`config`], header_timeout replaced when given).
async fn host(double: &Double, early: &str, header_timeout: Option<&str>) -> Host {
    let mut cfg = config(
        &double.url(),
        &[("agent", SANDBOX), ("pass", PASS), ("watched", WATCHED)],
        "",
    )
    .replace(
        "idle_timeout = \"30s\"\n",
        &format!("idle_timeout = \"30s\"\nearly_headers = \"{early}\"\n"),
    );
    if let Some(t) = header_timeout {
        cfg = cfg.replace(
            "header_timeout = \"30s\"",
            &format!("header_timeout = \"{t}\""),
        );
    }
    Host::start(&cfg).await
}

fn chat(stream: Option<bool>) -> Value {
    let mut v =
        json!({"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "hi there"}]});
    if let Some(s) = stream {
        v["stream"] = json!(s);
    }
    v
}

/// Sends `body` to `path` and waits for the response head while the double holds
/// Ollama's: the head must come from the bridge, no sooner than the threshold.
async fn head_while_held(
    double: &Double,
    sock: &Path,
    path: &str,
    body: &Value,
) -> Response<Incoming> {
    let t0 = Instant::now();
    let resp = tokio::time::timeout(GUARD, send_unix(sock, post(path, body)))
        .await
        .expect("headers while Ollama is still loading")
        .unwrap();
    assert_eq!(double.held(), 1, "the double still holds Ollama's headers");
    assert!(
        t0.elapsed() >= THRESHOLD,
        "not before the threshold: {:?}",
        t0.elapsed()
    );
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key(REQUEST_ID));
    resp
}

fn content_type(resp: &Response<Incoming>) -> &str {
    resp.headers()["content-type"].to_str().unwrap()
}

fn record<'a>(records: &'a [Value], id: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["request_id"] == id)
        .unwrap_or_else(|| panic!("no record {id} in {records:#?}"))
}

#[tokio::test]
async fn a_streamed_request_gets_its_headers_while_ollama_loads_then_the_whole_answer() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = host(&double, "300ms", None).await;
    double.set_script(Script {
        hold_headers: true,
        ..Script::default()
    });
    let mut ids = Vec::new();

    // Native chat: streams by default.
    let resp = head_while_held(&double, &socket(&host, "agent"), "/api/chat", &chat(None)).await;
    assert_eq!(content_type(&resp), "application/x-ndjson");
    ids.push(resp.headers()[REQUEST_ID].to_str().unwrap().to_owned());
    double.release_headers(1);
    let (_, _, body) = collect(resp).await;
    let lines = ndjson(&body);
    assert!(lines.len() > 2, "{lines:?}");
    assert_eq!(lines.last().unwrap()["done"], true);
    assert!(lines.iter().all(|l| l.get("error").is_none()), "{lines:?}");

    // /v1 through the native path, and passed through to Ollama's /v1: SSE.
    let v1 = json!({"model": "qwen2.5:7b", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    for sandbox in ["agent", "pass"] {
        let resp = head_while_held(
            &double,
            &socket(&host, sandbox),
            "/v1/chat/completions",
            &v1,
        )
        .await;
        assert_eq!(content_type(&resp), "text/event-stream", "{sandbox}");
        ids.push(resp.headers()[REQUEST_ID].to_str().unwrap().to_owned());
        double.release_headers(1);
        let (_, _, body) = collect(resp).await;
        let events = sse_events(&body);
        assert_eq!(events.last().unwrap(), "[DONE]", "{sandbox}: {events:?}");
        assert!(events.len() > 2, "{sandbox}: {events:?}");
    }

    // A client gone while Ollama still loads (on a listener that watches for hang-ups):
    // the upstream request is dropped, the record says client_closed with the 200 sent.
    let mut s = tokio::net::UnixStream::connect(socket(&host, "watched"))
        .await
        .unwrap();
    let body = serde_json::to_vec(&chat(None)).unwrap();
    let head = format!(
        "POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(GUARD, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the head came: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(double.held(), 1);
    drop(s);
    tokio::time::timeout(GUARD, double.wait_held_at_most(0))
        .await
        .expect("the upstream request was dropped");
    let gone = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{REQUEST_ID}: ")))
        .expect("the request id")
        .to_owned();
    let r = tokio::time::timeout(GUARD, async {
        loop {
            let found = host
                .audit_records()
                .into_iter()
                .find(|r| r["request_id"] == gone.as_str());
            if let Some(r) = found {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the record of the client gone");
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["reason"], "client_closed", "{r}");
    assert_eq!(r.get("upstream_status"), None, "{r}");

    let records = host.audit_records();
    for id in &ids {
        let r = record(&records, id);
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["upstream_status"], 200, "{r}");
        assert_eq!(r["reason"], Value::Null, "{r}");
        assert!(r["bytes_out"].as_u64().unwrap() > 0, "{r}");
    }
}

#[tokio::test]
async fn ollama_failing_after_early_headers_puts_its_error_in_the_stream() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = host(&double, "300ms", Some("3s")).await;
    let agent = socket(&host, "agent");
    let missing = "model \"qwen2.5:7b\" not found, try pulling it first";

    // A fast error keeps its real status.
    double.set_script(Script {
        head_error: Some((404, missing.into())),
        ..Script::default()
    });
    let (status, _, body) = collect(
        send_unix(&agent, post("/api/chat", &chat(None)))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));

    // After the threshold: 200, then Ollama's error as the stream's one line.
    double.set_script(Script {
        hold_headers: true,
        head_error: Some((404, missing.into())),
        ..Script::default()
    });
    let resp = head_while_held(&double, &agent, "/api/chat", &chat(None)).await;
    let ndjson_id = resp.headers()[REQUEST_ID].to_str().unwrap().to_owned();
    double.release_headers(1);
    let (_, _, body) = collect(resp).await;
    assert_eq!(ndjson(&body), [json!({"error": missing})]);

    // SSE: one `data: {"error":{...}}` event, through the native path and passed through.
    let v1 = json!({"model": "qwen2.5:7b", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let mut sse_ids = Vec::new();
    for sandbox in ["agent", "pass"] {
        let resp = head_while_held(
            &double,
            &socket(&host, sandbox),
            "/v1/chat/completions",
            &v1,
        )
        .await;
        sse_ids.push(resp.headers()[REQUEST_ID].to_str().unwrap().to_owned());
        double.release_headers(1);
        let (_, _, body) = collect(resp).await;
        let events = sse_events(&body);
        assert_eq!(events.len(), 1, "{sandbox}: {events:?}");
        assert_eq!(
            events[0]["error"]["message"], missing,
            "{sandbox}: {events:?}"
        );
    }

    // Ollama never answers: header_timeout ends the stream with the bridge's error.
    double.set_script(Script {
        stall_headers: true,
        ..Script::default()
    });
    let t0 = Instant::now();
    let resp = tokio::time::timeout(
        GUARD,
        send_unix(
            &agent,
            post(
                "/api/generate",
                &json!({"model": "qwen2.5:7b", "prompt": "hi"}),
            ),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "before header_timeout: {:?}",
        t0.elapsed()
    );
    let timeout_id = resp.headers()[REQUEST_ID].to_str().unwrap().to_owned();
    let (_, _, body) = collect(resp).await;
    let lines = ndjson(&body);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let msg = lines[0]["error"].as_str().unwrap();
    assert!(
        msg.starts_with("ollama-bridge: ") && msg.contains("header_timeout"),
        "{msg}"
    );

    let records = host.audit_records();
    for id in std::iter::once(&ndjson_id).chain(&sse_ids) {
        let r = record(&records, id);
        assert_eq!(r["status"], 200, "the status sent: {r}");
        assert_eq!(r["upstream_status"], 404, "Ollama's: {r}");
        assert_eq!(r["reason"], "upstream_error", "{r}");
    }
    let r = record(&records, &timeout_id);
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r.get("upstream_status"), None, "Ollama never answered: {r}");
    assert_eq!(r["reason"], "upstream_timeout", "{r}");
    let fast = records
        .iter()
        .find(|r| r["status"] == 404)
        .expect("the fast error's record");
    assert_eq!(fast.get("upstream_status"), None, "{fast}");
}

/// Waits for Ollama past several thresholds and checks no head came meanwhile.
async fn waits_for_ollama(
    double: &Double,
    sock: &Path,
    path: &str,
    body: &Value,
) -> Response<Incoming> {
    let req = post(path, body);
    let sock = sock.to_owned();
    let mut pending = tokio::spawn(async move { send_unix(&sock, req).await });
    tokio::time::timeout(GUARD, double.wait_held(1))
        .await
        .expect("the request reached Ollama");
    let early = tokio::time::timeout(THRESHOLD * 4, &mut pending).await;
    assert!(early.is_err(), "no headers before Ollama's: {early:?}");
    double.release_headers(1);
    tokio::time::timeout(GUARD, pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn without_a_stream_or_with_early_headers_off_the_client_waits_for_ollama() {
    let double = Double::start(DoubleConfig::default()).await;
    double.set_script(Script {
        hold_headers: true,
        ..Script::default()
    });
    let early = host(&double, "300ms", None).await;
    // A non-streamed request waits as before: its answer is one JSON object.
    let resp = waits_for_ollama(
        &double,
        &socket(&early, "agent"),
        "/api/chat",
        &chat(Some(false)),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(content_type(&resp).starts_with("application/json"));
    let (_, _, body) = collect(resp).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["done"], true);
    let v1 = json!({"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "hi"}]});
    let resp = waits_for_ollama(
        &double,
        &socket(&early, "agent"),
        "/v1/chat/completions",
        &v1,
    )
    .await;
    assert_eq!(resp.status(), 200, "/v1 streams only when asked to");
    assert!(content_type(&resp).starts_with("application/json"));

    // `early_headers = "off"`: a streamed request waits for Ollama's own head too.
    let off = host(&double, "off", None).await;
    let resp = waits_for_ollama(&double, &socket(&off, "agent"), "/api/chat", &chat(None)).await;
    assert_eq!(content_type(&resp), "application/x-ndjson");
    let (_, _, body) = collect(resp).await;
    assert_eq!(ndjson(&body).last().unwrap()["done"], true);
    let recs = off.audit_records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].get("upstream_status"), None, "{}", recs[0]);
}
