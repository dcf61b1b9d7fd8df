//! Several Ollama servers behind one bridge (`[[upstream.server]]`): two doubles holding
//! different models. Requests reach a server that has the model, one that has it loaded
//! first; listings merge; a stopped server's shared models go to the other within one
//! refresh, a model only it had gets a 502 naming it, and it is used again once it is
//! back; a failed connection is retried once on the other server, a request that
//! reached a server never is.

use std::path::Path;
use std::time::Duration;

use bridge_tests::double::{Double, DoubleConfig, DoubleModel, Script};
use bridge_tests::harness::{bin, config as one_server, socket, Host};
use bridge_tests::http::{bridge_status, collect, post, req, send_unix, GUARD};
use serde_json::{json, Value};

/// A double holding `models`, with `loaded` listed by `/api/ps`.
fn config(models: &[&str], loaded: &[&str]) -> DoubleConfig {
    DoubleConfig {
        models: models
            .iter()
            .map(|m| DoubleModel {
                name: (*m).to_owned(),
                context_length: 32768,
                embedding: false,
            })
            .collect(),
        loaded: Some(loaded.iter().map(|m| (*m).to_owned()).collect()),
        ..DoubleConfig::default()
    }
}

/// Servers `gpu1` at `a` and `gpu2` at `b` (with `b_extra` keys), one sandbox `a`.
fn two_servers(a: &str, b: &str, refresh: &str, b_extra: &str) -> String {
    format!(
        "[upstream]\nconnect_timeout = \"2s\"\nheader_timeout = \"30s\"\nidle_timeout = \"30s\"\nrefresh_interval = \"{refresh}\"\n\n\
         [[upstream.server]]\nname = \"gpu1\"\nurl = \"{a}\"\n\n\
         [[upstream.server]]\nname = \"gpu2\"\nurl = \"{b}\"\n{b_extra}\n\n\
         [audit]\npath = \"{{dir}}/audit.jsonl\"\n\n\
         [metrics]\nlisten = \"unix:{{dir}}/metrics.sock\"\n\n\
         [[sandbox]]\nname = \"a\"\nlisten = \"unix:{{dir}}/a/ollama.sock\"\n"
    )
}

/// A non-streamed chat with `model`: status and body.
async fn chat(sock: &Path, model: &str) -> (u16, Value) {
    let body =
        json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": false});
    let (s, _, b) = collect(send_unix(sock, post("/api/chat", &body)).await.unwrap()).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// Waits until the sandbox's status lists each `(model, reachable)`.
async fn wait_models(sock: &Path, want: &[(&str, bool)]) {
    tokio::time::timeout(GUARD, async {
        loop {
            let doc = bridge_status(sock).await;
            let seen = |m: &str| {
                doc["available_models"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["model"] == m)
                    .map(|e| e["reachable"] == true)
            };
            if want.iter().all(|(m, r)| seen(m) == Some(*r)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("/_bridge/status shows {want:?} within the guard time"));
}

/// The last audit record for `path`.
fn last_record(host: &Host, path: &str) -> Value {
    let recs = host.audit_records();
    recs.into_iter()
        .rev()
        .find(|r| r["path"] == path)
        .expect("a record")
}

/// The metrics listener's text.
async fn metrics_text(host: &Host) -> String {
    let get = req("GET", "/metrics", "");
    let resp = send_unix(&host.path("metrics.sock"), get).await.unwrap();
    String::from_utf8(collect(resp).await.2.to_vec()).unwrap()
}

/// `bridge-host status --config` of the running host: its stdout.
async fn status_lines(host: &Host) -> String {
    let out = tokio::process::Command::new(bin("bridge-host"))
        .arg("status")
        .arg("--config")
        .arg(&host.config)
        .output();
    let out = tokio::time::timeout(GUARD, out).await.unwrap().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The model names of a listing at `path` (`models[].name`, or `data[].id`).
async fn listing(sock: &Path, path: &str) -> Vec<String> {
    let (s, _, b) = collect(send_unix(sock, req("GET", path, "")).await.unwrap()).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let v: Value = serde_json::from_slice(&b).unwrap();
    let items = v["models"]
        .as_array()
        .or(v["data"].as_array())
        .unwrap()
        .clone();
    let mut names: Vec<String> = items
        .iter()
        .map(|i| i["name"].as_str().or(i["id"].as_str()).unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_where_the_model_is_loaded_and_listings_merge() {
    let a = Double::start(config(&["qwen2.5:7b", "llama3.2:3b"], &[])).await;
    let b = Double::start(config(&["llama3.3:70b", "llama3.2:3b"], &["llama3.2:3b"])).await;
    let host = Host::start(&two_servers(&a.url(), &b.url(), "200ms", "")).await;
    let sock = socket(&host, "a");
    wait_models(
        &sock,
        &[
            ("qwen2.5:7b", true),
            ("llama3.3:70b", true),
            ("llama3.2:3b", true),
        ],
    )
    .await;

    assert_eq!(chat(&sock, "qwen2.5:7b").await.0, 200);
    assert_eq!((a.count("/api/chat"), b.count("/api/chat")), (1, 0));
    assert_eq!(last_record(&host, "/api/chat")["upstream"], "gpu1");
    assert_eq!(chat(&sock, "llama3.3:70b").await.0, 200);
    assert_eq!((a.count("/api/chat"), b.count("/api/chat")), (1, 1));
    assert_eq!(last_record(&host, "/api/chat")["upstream"], "gpu2");
    // On both, loaded on gpu2 only: always gpu2.
    for _ in 0..3 {
        assert_eq!(chat(&sock, "llama3.2:3b").await.0, 200);
    }
    assert_eq!((a.count("/api/chat"), b.count("/api/chat")), (1, 4));

    let all = vec!["llama3.2:3b", "llama3.3:70b", "qwen2.5:7b"];
    assert_eq!(listing(&sock, "/api/tags").await, all);
    assert_eq!(listing(&sock, "/v1/models").await, all);
    assert_eq!(listing(&sock, "/api/ps").await, vec!["llama3.2:3b"]);
    assert!(last_record(&host, "/api/ps")["upstream"]
        .as_str()
        .unwrap()
        .contains("gpu"));
    let (s, _, _) = collect(
        send_unix(&sock, req("GET", "/api/version", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);

    // The operator's view: requests and state per server in the metrics and in
    // `bridge-host status`; the sandbox's status names no server.
    let m = metrics_text(&host).await;
    for want in [
        // gpu1: a chat, /api/version, three merged listings; gpu2: four chats, three.
        r#"ollama_bridge_upstream_requests_total{server="gpu1"} 5"#,
        r#"ollama_bridge_upstream_requests_total{server="gpu2"} 7"#,
        r#"ollama_bridge_upstream_up{server="gpu2"} 1"#,
        r#"ollama_bridge_upstream_loaded_models{server="gpu2"} 1"#,
    ] {
        assert!(m.contains(want), "{want} in {m}");
    }
    let out = status_lines(&host).await;
    let gpu2 = out.lines().find(|l| l.starts_with("gpu2")).expect(&out);
    assert!(
        gpu2.contains(" up ") && gpu2.contains("llama3.2:3b"),
        "{out}"
    );
    assert!(gpu2.contains("0 run, 0 wait"), "{out}");
    let doc = bridge_status(&sock).await;
    let text = doc.to_string();
    for secret in ["gpu1", "gpu2", "127.0.0.1"] {
        assert!(
            !text.contains(secret),
            "the sandbox's status names no server: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_sends_its_models_elsewhere_and_comes_back() {
    let a = Double::start(config(&["qwen2.5:7b", "llama3.2:3b"], &[])).await;
    let b = Double::start(config(&["llama3.3:70b", "llama3.2:3b"], &["llama3.2:3b"])).await;
    let b_addr = b.addr();
    let host = Host::start(&two_servers(&a.url(), &b.url(), "200ms", "")).await;
    let sock = socket(&host, "a");
    wait_models(&sock, &[("qwen2.5:7b", true), ("llama3.3:70b", true)]).await;
    assert_eq!(chat(&sock, "llama3.2:3b").await.0, 200);
    assert_eq!((a.count("/api/chat"), b.count("/api/chat")), (0, 1));

    // gpu2 stops: within one refresh its shared model goes to gpu1...
    drop(b);
    wait_models(&sock, &[("llama3.3:70b", false), ("llama3.2:3b", true)]).await;
    assert_eq!(chat(&sock, "llama3.2:3b").await.0, 200);
    assert_eq!(a.count("/api/chat"), 1);
    assert_eq!(last_record(&host, "/api/chat")["upstream"], "gpu1");
    // ...and a model only it had gets a 502 naming it.
    let (s, body) = chat(&sock, "llama3.3:70b").await;
    assert_eq!(s, 502, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("ollama server gpu2 is down"), "{msg}");
    let rec = last_record(&host, "/api/chat");
    assert_eq!(rec["reason"], "upstream_unreachable", "{rec}");
    assert_eq!(rec["upstream"], "gpu2", "{rec}");
    assert_eq!(
        a.count("/api/chat"),
        1,
        "never sent to a server without the model"
    );
    assert_eq!(
        listing(&sock, "/api/tags").await,
        vec!["llama3.2:3b", "qwen2.5:7b"]
    );

    // gpu2 is back on the same address: routing to it is restored.
    let listener = tokio::net::TcpListener::bind(b_addr).await.unwrap();
    let b = Double::serve(
        listener,
        config(&["llama3.3:70b", "llama3.2:3b"], &["llama3.2:3b"]),
    );
    wait_models(&sock, &[("llama3.3:70b", true)]).await;
    assert_eq!(chat(&sock, "llama3.3:70b").await.0, 200);
    assert_eq!(chat(&sock, "llama3.2:3b").await.0, 200);
    assert_eq!(b.count("/api/chat"), 2);
    assert_eq!(last_record(&host, "/api/chat")["upstream"], "gpu2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connection_is_retried_once_and_a_sent_request_never() {
    let a = Double::start(config(&["qwen2.5:7b", "llama3.2:3b"], &[])).await;
    let b_models = ["qwen2.5:7b", "llama3.3:70b"];
    let b = Double::start(config(&b_models, &["qwen2.5:7b"])).await;
    let b_addr = b.addr();
    // A refresh an hour away: the bridge learns of gpu2's stop from the connection.
    let host = Host::start(&two_servers(
        &a.url(),
        &b.url(),
        "1h",
        "header_timeout = \"1s\"",
    ))
    .await;
    let sock = socket(&host, "a");
    // A model of each server's own: both were refreshed.
    wait_models(&sock, &[("llama3.2:3b", true), ("llama3.3:70b", true)]).await;
    assert_eq!(chat(&sock, "qwen2.5:7b").await.0, 200);
    assert_eq!((a.count("/api/chat"), b.count("/api/chat")), (0, 1));

    drop(b);
    let (s, body) = chat(&sock, "qwen2.5:7b").await;
    assert_eq!(s, 200, "retried on gpu1: {body}");
    assert_eq!(a.count("/api/chat"), 1);
    assert_eq!(last_record(&host, "/api/chat")["upstream"], "gpu1");
    host.wait_log("retrying on another ollama server").await;

    // gpu2 comes back but never answers a chat's headers: its request ends in a 504
    // after its header_timeout, and is not sent again to gpu1.
    let listener = tokio::net::TcpListener::bind(b_addr).await.unwrap();
    let mut stalled = config(&b_models, &["qwen2.5:7b"]);
    stalled.script = Script {
        stall_headers: true,
        ..Script::default()
    };
    let b = Double::serve(listener, stalled);
    host.wait_log("ollama server is reachable again").await;
    let (s, body) = chat(&sock, "qwen2.5:7b").await;
    assert_eq!(s, 504, "{body}");
    assert_eq!(b.count("/api/chat"), 1);
    assert_eq!(
        a.count("/api/chat"),
        1,
        "nothing is retried once a byte went upstream"
    );
    assert_eq!(last_record(&host, "/api/chat")["upstream"], "gpu2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_url_is_the_server_named_default() {
    let d = Double::start(DoubleConfig::default()).await;
    let metrics = "[metrics]\nlisten = \"unix:{dir}/metrics.sock\"\n";
    let host = Host::start(&one_server(&d.url(), &[("a", "")], metrics)).await;
    let sock = socket(&host, "a");
    assert_eq!(chat(&sock, "qwen2.5:7b").await.0, 200);
    assert_eq!(last_record(&host, "/api/chat")["upstream"], "default");
    let m = metrics_text(&host).await;
    let want = r#"ollama_bridge_upstream_requests_total{server="default"} 1"#;
    assert!(m.contains(want), "{want} in {m}");
    // No background refresh with one server: Ollama saw only the chat.
    assert_eq!(d.requests().len(), 1, "{:?}", d.requests());
}
