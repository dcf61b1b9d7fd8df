//! Failures through `openai_via_native`, each ending in OpenAI's error format and never
//! in a hang: Ollama's own error line, a silent Ollama, a model Ollama lacks, and
//! requests the bridge refuses before anything reaches Ollama.

use bridge_tests::double::{Double, DoubleConfig, Script};
use bridge_tests::harness::{config, socket, Guest, Host};
use bridge_tests::http::sse_events;
use bridge_tests::oai::{chain, chat, content, sandbox, send, PINNED};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_errors_become_openai_errors_never_hangs() {
    let double = Double::start(DoubleConfig::default()).await;
    let cfg = config(&double.url(), &[("agent", &sandbox())], PINNED)
        .replace("idle_timeout = \"30s\"", "idle_timeout = \"1s\"");
    let host = Host::start(&cfg).await;
    let guest = Guest::start(&socket(&host, "agent")).await;

    // Ollama's own error line after two chunks: two deltas, one error event, the end.
    double.set_script(Script {
        error_after: Some(2),
        ..Script::default()
    });
    let (status, _, body) = send(guest.addr, "/v1/chat/completions", &chat(true, false)).await;
    assert_eq!(status, 200);
    let events = sse_events(&body);
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(content(&events), "Hello from ");
    let err = &events[2]["error"];
    assert!(
        err["message"].as_str().unwrap().contains("unexpected EOF"),
        "{err}"
    );
    assert_eq!(err["type"], "api_error");
    // The same, not streamed: a 500 in OpenAI's shape.
    let (status, _, body) = send(guest.addr, "/v1/chat/completions", &chat(false, false)).await;
    assert_eq!(status, 500);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unexpected EOF"),
        "{v}"
    );

    // A silent Ollama: the idle timeout ends the stream with an error event.
    double.set_script(Script {
        stall_after: Some(1),
        ..Script::default()
    });
    let (status, _, body) = send(guest.addr, "/v1/chat/completions", &chat(true, false)).await;
    assert_eq!(status, 200);
    let events = sse_events(&body);
    assert_eq!(events.len(), 2, "{events:?}");
    let err = &events[1]["error"];
    assert!(
        err["message"].as_str().unwrap().contains("idle_timeout"),
        "{err}"
    );
    assert_eq!(err["code"], "upstream_timeout");
    let (status, _, body) = send(guest.addr, "/v1/chat/completions", &chat(false, false)).await;
    assert_eq!(status, 504, "{}", String::from_utf8_lossy(&body));

    // A model the policy allows but Ollama lacks: Ollama's 404, in OpenAI's shape.
    double.set_script(Script::default());
    let mut req = chat(true, false);
    req["model"] = json!("llama3.2:1b");
    let (status, _, body) = send(guest.addr, "/v1/chat/completions", &req).await;
    assert_eq!(status, 404);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["type"], "not_found_error");
    assert_eq!(v["error"]["message"], "model 'llama3.2:1b' not found");

    let reasons: Vec<Value> = host
        .audit_records()
        .iter()
        .map(|r| r["reason"].clone())
        .collect();
    assert_eq!(
        reasons,
        [
            json!("upstream_error"),
            json!("upstream_error"),
            json!("upstream_timeout"),
            json!("upstream_timeout"),
            // Ollama's own error answer (404 model not found) is an upstream error too.
            json!("upstream_error")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_400_in_openai_format_and_never_reach_ollama() {
    let (double, _host, guest) = chain().await;
    let image = json!([{"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]);
    let cases = [
        (
            json!({"model": "qwen2.5:7b", "messages": "hi"}),
            "\"messages\" must be an array",
        ),
        (
            json!({"model": "qwen2.5:7b", "messages": [{"role": "user", "content": image}]}),
            "remote images",
        ),
        (
            json!({"model": "qwen2.5:7b", "messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{"}}]}]}),
            "function.arguments",
        ),
        (
            json!({"model": "qwen2.5:7b", "messages": [], "temperature": "warm"}),
            "\"temperature\" must be a number",
        ),
        (
            json!({"model": "nomic-embed-text", "input": 5}),
            "\"input\" must be",
        ),
    ];
    for (body, want) in cases {
        let path = if body.get("input").is_some() {
            "/v1/embeddings"
        } else {
            "/v1/chat/completions"
        };
        let (status, _, bytes) = send(guest.addr, path, &body).await;
        assert_eq!(status, 400, "{body}");
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with("ollama-bridge: ") && msg.contains(want),
            "{msg}"
        );
    }
    assert!(double.requests().is_empty());
}
