//! The context length is the host's per-model policy, end to end: a prompt longer than
//! Ollama's default context reaches the model whole through the bridge (native routes
//! and `openai_via_native`) and is silently cut when sent straight to Ollama; the most
//! specific `[model."<glob>"]` wins, pinning or clamping what the agent asks for.

use bridge_tests::double::{Double, DoubleConfig};
use bridge_tests::harness::{config, socket, Guest, Host};
use bridge_tests::http::sse_events;
use bridge_tests::oai::{send, PINNED};
use serde_json::{json, Value};

const SANDBOX: &str = "models = [\"qwen2.5:*\", \"llama3.2:*\", \"nomic-embed-text\"]\nendpoints = [\"chat\", \"generate\", \"embed\", \"openai\"]\nopenai_via_native = true";

/// Words in the system prompt: more than the double's default context of 4096.
const SYSTEM_WORDS: u64 = 6000;
/// The whole prompt: the system prompt plus "what now".
const FULL: u64 = SYSTEM_WORDS + 2;

fn long_chat(stream: bool) -> Value {
    json!({"model": "qwen2.5:7b", "stream": stream, "messages": [
        {"role": "system", "content": "w ".repeat(SYSTEM_WORDS as usize)},
        {"role": "user", "content": "what now"},
    ]})
}

async fn start(extra: &str) -> (Double, Host, Guest) {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(&double.url(), &[("agent", SANDBOX)], extra)).await;
    let guest = Guest::start(&socket(&host, "agent")).await;
    (double, host, guest)
}

async fn json_of(addr: std::net::SocketAddr, path: &str, body: &Value) -> Value {
    let (status, _, bytes) = send(addr, path, body).await;
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&bytes));
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_system_prompt_reaches_the_model_whole_only_through_the_bridge() {
    let (double, host, guest) = start(PINNED).await;
    let (bridge, straight) = (guest.addr, double.addr());

    // Native chat: prompt_eval_count shows what the model saw.
    let v = json_of(bridge, "/api/chat", &long_chat(false)).await;
    assert_eq!(v["prompt_eval_count"], FULL, "through the bridge");
    let v = json_of(straight, "/api/chat", &long_chat(false)).await;
    assert_eq!(v["prompt_eval_count"], 4096, "straight to Ollama: cut");

    // Native generate, the same.
    let gen = json!({"model": "qwen2.5:7b", "stream": false,
        "system": "w ".repeat(SYSTEM_WORDS as usize), "prompt": "what now"});
    let v = json_of(bridge, "/api/generate", &gen).await;
    assert_eq!(v["prompt_eval_count"], FULL);
    let v = json_of(straight, "/api/generate", &gen).await;
    assert_eq!(v["prompt_eval_count"], 4096);

    // OpenAI clients: usage.prompt_tokens, not streamed and streamed.
    let v = json_of(bridge, "/v1/chat/completions", &long_chat(false)).await;
    assert_eq!(v["usage"]["prompt_tokens"], FULL, "openai_via_native");
    let v = json_of(straight, "/v1/chat/completions", &long_chat(false)).await;
    assert_eq!(v["usage"]["prompt_tokens"], 4096, "Ollama's /v1 layer: cut");
    let mut req = long_chat(true);
    req["stream_options"] = json!({"include_usage": true});
    let (_, _, body) = send(bridge, "/v1/chat/completions", &req).await;
    let events = sse_events(&body);
    assert_eq!(events[events.len() - 2]["usage"]["prompt_tokens"], FULL);
    let (_, _, body) = send(straight, "/v1/chat/completions", &req).await;
    let events = sse_events(&body);
    assert_eq!(events[events.len() - 2]["usage"]["prompt_tokens"], 4096);

    // Each bridged request was sent with the pinned context and audited with it.
    let audit = host.audit_records();
    assert_eq!(audit.len(), 4);
    for r in &audit {
        assert_eq!(r["num_ctx_requested"], Value::Null, "{r}");
        assert_eq!(r["num_ctx_sent"], 8192, "{r}");
        assert_eq!(r["prompt_tokens"], FULL, "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn most_specific_glob_wins_pin_or_clamp_on_every_route() {
    let policy = "[model.\"*\"]\nnum_ctx_max = 4096\n\n[model.\"qwen2.5:*\"]\nnum_ctx_min = 2048\nnum_ctx_max = 16384\n\n[model.\"qwen2.5:7b\"]\nnum_ctx = 8192\n";
    let (double, host, guest) = start(policy).await;
    let hi = json!([{"role": "user", "content": "hi"}]);
    let with = |mut body: Value, asked: Option<u64>| {
        if let Some(n) = asked {
            body["options"] = json!({"num_ctx": n});
        }
        body
    };
    let chat = |model: &str| json!({"model": model, "stream": false, "messages": hi});
    let embed = json!({"model": "nomic-embed-text", "input": "hi"});
    // (path, body, asked, sent)
    let cases: Vec<(&str, Value, Option<u64>, Option<u64>)> = vec![
        ("/api/chat", chat("qwen2.5:7b"), Some(100_000), Some(8192)),
        ("/api/chat", chat("qwen2.5:7b"), None, Some(8192)),
        ("/api/chat", chat("qwen2.5"), Some(100_000), Some(16384)),
        ("/api/chat", chat("qwen2.5:latest"), Some(1000), Some(2048)),
        ("/api/chat", chat("qwen2.5:latest"), Some(9000), Some(9000)),
        ("/api/chat", chat("qwen2.5:latest"), None, Some(2048)),
        (
            "/api/generate",
            json!({"model": "llama3.2:3b", "stream": false, "prompt": "hi"}),
            Some(100_000),
            Some(4096),
        ),
        // A cap alone still caps: nothing asked, the cap is sent.
        (
            "/api/generate",
            json!({"model": "llama3.2:3b", "stream": false, "prompt": "hi"}),
            None,
            Some(4096),
        ),
        ("/api/embed", embed.clone(), Some(100_000), Some(4096)),
        (
            "/api/embeddings",
            json!({"model": "nomic-embed-text", "prompt": "hi"}),
            Some(100_000),
            Some(4096),
        ),
        (
            "/v1/chat/completions",
            chat("qwen2.5:latest"),
            None,
            Some(2048),
        ),
        ("/v1/chat/completions", chat("qwen2.5:7b"), None, Some(8192)),
        ("/v1/embeddings", embed.clone(), None, Some(4096)),
    ];
    for (path, body, asked, sent) in &cases {
        double.clear();
        let body = if path.starts_with("/v1/") {
            body.clone()
        } else {
            with(body.clone(), *asked)
        };
        json_of(guest.addr, path, &body).await;
        let got = double.requests();
        assert_eq!(got.len(), 1, "{path} {body}");
        let num_ctx = got[0].json().pointer("/options/num_ctx").cloned();
        assert_eq!(num_ctx, sent.map(|n| json!(n)), "{path} {body}");
    }
    let audit = host.audit_records();
    assert_eq!(audit.len(), cases.len());
    for (r, (path, _, asked, sent)) in audit.iter().zip(&cases) {
        assert_eq!(r["path"], *path, "{r}");
        let asked = if path.starts_with("/v1/") {
            None
        } else {
            *asked
        };
        assert_eq!(r["num_ctx_requested"], json!(asked), "{r}");
        assert_eq!(r["num_ctx_sent"], json!(sent), "{r}");
    }
}
