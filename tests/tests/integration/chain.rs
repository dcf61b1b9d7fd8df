//! The whole chain on real sockets: client → bridge-guest (TCP, port 0) → unix socket →
//! bridge-host → the Ollama test double (TCP, port 0).

use std::time::{Duration, Instant};

use bridge_tests::double::{Double, DoubleConfig, Script};
use bridge_tests::harness::{config, dead_upstream, socket, Guest, Host};
use bridge_tests::http::{collect, ndjson, next_data, post, req, rest, send_tcp, send_unix, GUARD};
use serde_json::{json, Value};

const SANDBOX: &str = "models = [\"qwen2.5:7b\", \"llama3.2:*\"]\nendpoints = [\"chat\", \"generate\", \"embed\", \"list\", \"openai\"]";

async fn chain() -> (Double, Host, Guest) {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(&double.url(), &[("agent", SANDBOX)], "")).await;
    let guest = Guest::start(&socket(&host, "agent")).await;
    (double, host, guest)
}

#[tokio::test]
async fn listing_through_guest_and_host_shows_only_allowed_models() {
    let (double, _host, guest) = chain().await;
    let (status, _, body) = collect(
        send_tcp(guest.addr, req("GET", "/api/tags", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    let names: Vec<&str> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["qwen2.5:7b", "llama3.2:3b"]);
    // Ollama's Host check passed because the bridge set Host to the upstream's own.
    let got = double.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].header("host"),
        Some(double.addr().to_string().as_str())
    );
}

#[tokio::test]
async fn streaming_is_not_buffered() {
    let (double, _host, guest) = chain().await;
    double.set_script(Script {
        gated: true,
        text: Some("one two three four five".into()),
        ..Script::default()
    });
    let resp = send_tcp(
        guest.addr,
        post(
            "/api/chat",
            &json!({"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "count"}]}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let mut body = resp.into_body();
    let mut lines = Vec::new();
    let mut pending = Vec::new();
    // 5 content chunks + the final chunk. The double emits chunk k+1 only after we
    // release it, which we do only after chunk k reached us through guest and host.
    for k in 0..6u64 {
        loop {
            if let Some(p) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=p).collect();
                lines.push(serde_json::from_slice::<Value>(&line).unwrap());
                break;
            }
            let d = next_data(&mut body)
                .await
                .expect("chunk k arrives before chunk k+1 exists");
            pending.extend_from_slice(&d);
        }
        assert_eq!(lines.len() as u64, k + 1);
        // The double has emitted exactly k+1 chunks: nothing more was waiting anywhere.
        assert_eq!(double.emitted(), k + 1);
        double.release(1);
    }
    assert!(next_data(&mut body).await.is_none());
    let text: String = lines[..5]
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "one two three four five");
    assert_eq!(lines[5]["done"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_body_is_the_reserialised_checked_json() {
    let (double, _host, guest) = chain().await;
    let raw = "{ \"model\" : \"qwen2.5:7b\",\n \"stream\": false, \"messages\": [ {\"role\":\"user\",\"content\":\"hi\"} ] }";
    let (status, _, body) = collect(
        send_tcp(guest.addr, req("POST", "/api/chat", raw))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let got = double.requests();
    assert_eq!(got.len(), 1);
    assert_ne!(
        got[0].body,
        raw.as_bytes(),
        "original bytes must not be forwarded"
    );
    assert_eq!(got[0].json(), serde_json::from_str::<Value>(raw).unwrap());
    assert_eq!(got[0].header("content-type"), Some("application/json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_requests_are_each_decided() {
    let (double, host, _guest) = chain().await;
    let s = tokio::net::UnixStream::connect(socket(&host, "agent"))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let ok = post(
        "/api/chat",
        &json!({"model": "qwen2.5:7b", "stream": false, "messages": []}),
    );
    sender.ready().await.unwrap();
    let (s1, _, _) = collect(sender.send_request(ok).await.unwrap()).await;
    let bad = post(
        "/api/chat",
        &json!({"model": "llama3.3:70b", "stream": false, "messages": []}),
    );
    sender.ready().await.unwrap();
    let (s2, _, b2) = collect(sender.send_request(bad).await.unwrap()).await;
    sender.ready().await.unwrap();
    let (s3, _, _) = collect(
        sender
            .send_request(req("POST", "/api/pull", "{\"model\":\"x\"}"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s1, s2, s3), (200, 403, 403));
    let msg: Value = serde_json::from_slice(&b2).unwrap();
    assert_eq!(
        msg["error"],
        "ollama-bridge: model \"llama3.3:70b\" is not allowed for sandbox \"agent\" (allowed: qwen2.5:7b, llama3.2:*)"
    );
    assert_eq!(
        double.requests().len(),
        1,
        "only the allowed request reached Ollama"
    );
}

#[tokio::test]
async fn unknown_routes_are_404_in_the_family_format() {
    let (double, host, _guest) = chain().await;
    let sock = socket(&host, "agent");
    let (s, _, b) = collect(send_unix(&sock, req("GET", "/api/nope", "")).await.unwrap()).await;
    assert_eq!(s, 404);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert!(
        v["error"].as_str().unwrap().starts_with("ollama-bridge: "),
        "{v}"
    );
    let (s, _, b) = collect(
        send_unix(&sock, req("POST", "/v1/responses", "{}"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 403);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["error"]["type"], "permission_error", "{v}");
    assert_eq!(v["error"]["code"], "endpoint_not_allowed", "{v}");
    assert!(double.requests().is_empty());
}

#[tokio::test]
async fn ollama_down_gives_502_json_within_the_connect_timeout() {
    let upstream = dead_upstream();
    let host = Host::start(&config(&upstream, &[("agent", SANDBOX)], "")).await;
    let guest = Guest::start(&socket(&host, "agent")).await;
    let started = Instant::now();
    let resp = send_tcp(
        guest.addr,
        post("/api/chat", &json!({"model": "qwen2.5:7b", "messages": []})),
    )
    .await
    .unwrap();
    let (status, headers, body) = collect(resp).await;
    let took = started.elapsed();
    assert_eq!(status, 502);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let v: Value = serde_json::from_slice(&body).unwrap();
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.starts_with("ollama-bridge: cannot reach Ollama: "),
        "{msg}"
    );
    // The sandbox never learns the upstream's address; the host log names it.
    assert!(!msg.contains("127.0.0.1"), "{msg}");
    let log = std::fs::read_to_string(&host.stderr).unwrap();
    assert!(log.contains(&format!("upstream {upstream}")), "{log}");
    // The contract: an answer within the connect timeout (2s here) plus a second.
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn host_down_guest_answers_502_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("missing/ollama.sock");
    let guest = Guest::start(&sock).await;
    for (path, openai) in [("/api/chat", false), ("/v1/chat/completions", true)] {
        let resp = send_tcp(guest.addr, post(path, &json!({"model": "qwen2.5:7b"})))
            .await
            .unwrap();
        let (status, _, body) = collect(resp).await;
        assert_eq!(status, 502);
        let v: Value = serde_json::from_slice(&body).unwrap();
        let msg = if openai {
            v["error"]["message"].as_str()
        } else {
            v["error"].as_str()
        }
        .unwrap();
        assert!(
            msg.starts_with(&format!(
                "ollama-bridge: cannot reach bridge-host at unix:{}: ",
                sock.display()
            )),
            "{msg}"
        );
        assert!(msg.contains("No such file or directory"), "{msg}");
    }
}

#[tokio::test]
async fn silent_ollama_gives_504_before_headers_and_an_error_line_mid_stream() {
    let double = Double::start(DoubleConfig::default()).await;
    let cfg = config(&double.url(), &[("agent", SANDBOX)], "").replace(
        "header_timeout = \"30s\"\nidle_timeout = \"30s\"",
        "header_timeout = \"1s\"\nidle_timeout = \"1s\"",
    );
    let host = Host::start(&cfg).await;
    let sock = socket(&host, "agent");
    let chat = json!({"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "hi"}]});

    double.set_script(Script {
        stall_headers: true,
        ..Script::default()
    });
    let (status, _, body) =
        collect(send_unix(&sock, post("/api/chat", &chat)).await.unwrap()).await;
    assert_eq!(status, 504);
    assert!(String::from_utf8_lossy(&body).contains("header_timeout"));

    double.set_script(Script {
        stall_after: Some(2),
        ..Script::default()
    });
    let (status, _, body) =
        collect(send_unix(&sock, post("/api/chat", &chat)).await.unwrap()).await;
    assert_eq!(status, 200);
    let lines = ndjson(&body);
    assert_eq!(lines.len(), 3, "two chunks, then the bridge's error line");
    assert!(
        lines[2]["error"].as_str().unwrap().contains("idle_timeout"),
        "{}",
        lines[2]
    );

    // Ollama's own mid-stream error line passes through untouched.
    double.set_script(Script {
        error_after: Some(1),
        ..Script::default()
    });
    let (status, _, body) =
        collect(send_unix(&sock, post("/api/chat", &chat)).await.unwrap()).await;
    assert_eq!(status, 200);
    let v = ndjson(&body).pop().unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("unexpected EOF"),
        "{v}"
    );

    let audit = host.audit_records();
    let reasons: Vec<Option<&str>> = audit.iter().map(|r| r["reason"].as_str()).collect();
    // Ollama's own error line after its 200 marks the record as failed upstream.
    assert_eq!(
        reasons,
        [
            Some("upstream_timeout"),
            Some("upstream_timeout"),
            Some("upstream_error")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_streams_then_exits_zero() {
    let (double, mut host, guest) = chain().await;
    double.set_script(Script {
        gated: true,
        text: Some("a b c".into()),
        ..Script::default()
    });
    let resp = send_tcp(
        guest.addr,
        post("/api/chat", &json!({"model": "qwen2.5:7b", "messages": []})),
    )
    .await
    .unwrap();
    let mut body = resp.into_body();
    let first = next_data(&mut body).await.unwrap();
    assert!(first.ends_with(b"\n"));
    host.signal(nix::sys::signal::Signal::SIGTERM);
    // New connections are refused once the daemon stops accepting; the socket goes away.
    let sock = socket(&host, "agent");
    let gone = async {
        while sock.exists() {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(GUARD, gone)
        .await
        .expect("socket removed after SIGTERM");
    double.release(10);
    let last = ndjson(&rest(&mut body).await).pop().unwrap();
    assert_eq!(last["done"], true, "stream completed");
    let status = tokio::time::timeout(GUARD, host.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}: {}", host.log());
}

/// A bridge-guest on the host and the upstream pointing at it: the request comes back
/// to the host once, is refused with 508 `loop_detected`, and that answer goes back
/// out: two records, not a storm; the sandbox's status says the upstream loops.
#[tokio::test]
async fn a_request_that_loops_back_is_refused_once_with_508() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent/ollama.sock");
    // The guest connects per connection, so it may start before the host's socket exists.
    let guest = Guest::start(&sock).await;
    let upstream = format!("http://{}", guest.addr);
    let host = Host::start_in(dir, &config(&upstream, &[("agent", SANDBOX)], ""), &[]).await;
    let resp = send_tcp(guest.addr, req("GET", "/api/tags", ""))
        .await
        .unwrap();
    let (status, _, body) = collect(resp).await;
    assert_eq!(status, 508, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("loop detected"), "{msg}");
    assert!(
        !msg.contains(&upstream),
        "the sandbox never sees the upstream: {msg}"
    );
    // (The probe `serve` sends at start loops too: its /api/version is refused as well.)
    let recs: Vec<Value> = host
        .audit_records()
        .into_iter()
        .filter(|r| r["path"] == "/api/tags")
        .collect();
    assert_eq!(recs.len(), 2, "{recs:#?}");
    let looped: Vec<_> = recs
        .iter()
        .filter(|r| r["reason"] == "loop_detected")
        .collect();
    assert_eq!(looped.len(), 1, "{recs:#?}");
    assert_eq!(looped[0]["status"], 508);
    assert!(host.log().contains(&format!("upstream {upstream}")));

    let (status, _, body) = collect(
        send_tcp(guest.addr, req("GET", protocol::route::STATUS_PATH, ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["upstream"]["reachable"], false, "{doc}");
    let err = doc["upstream"]["error"].as_str().unwrap();
    assert!(err.contains("loop detected"), "{err}");
    assert!(!err.contains(&upstream), "{err}");
}

/// `/_bridge/status` shows only the num_ctx policies that can apply to a model the
/// sandbox may use: never another sandbox's.
#[tokio::test]
async fn status_shows_only_the_sandboxs_own_model_policies() {
    let double = Double::start(DoubleConfig::default()).await;
    let policies =
        "[model.\"qwen2.5:7b\"]\nnum_ctx = 32768\n\n[model.\"llama3.3:70b\"]\nnum_ctx = 8192\n";
    let host = Host::start(&config(
        &double.url(),
        &[
            ("a", "models = [\"qwen2.5:*\"]"),
            ("b", "models = [\"llama3.3:*\"]"),
        ],
        policies,
    ))
    .await;
    let shown = |doc: &Value| -> Vec<String> {
        doc["num_ctx_policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["model"].as_str().unwrap().to_owned())
            .collect()
    };
    let a = bridge_tests::http::bridge_status(&socket(&host, "a")).await;
    assert_eq!(shown(&a), ["qwen2.5:7b"], "{a}");
    let b = bridge_tests::http::bridge_status(&socket(&host, "b")).await;
    assert_eq!(shown(&b), ["llama3.3:70b"], "{b}");
}
