//! Per-sandbox policy through the real daemon: model allowlists with Ollama's name rules,
//! the fields Ollama reads, cloud models, management routes, filtered listings.

use bridge_tests::double::{Double, DoubleConfig};
use bridge_tests::harness::{config, socket, Host};
use bridge_tests::http::{collect, post, req, send_unix};
use bridge_tests::native::chat_request;
use serde_json::{json, Value};

async fn setup() -> (Double, Host) {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(
        &double.url(),
        &[
            ("short", "models = [\"qwen2.5:latest\", \"llama3.2:*\"]"),
            (
                "full",
                "models = [\"registry.ollama.ai/library/qwen2.5:latest\"]",
            ),
            ("all", "models = [\"*\"]"),
        ],
        "",
    ))
    .await;
    (double, host)
}

async fn call(
    host: &Host,
    sandbox: &str,
    r: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> (u16, Value) {
    let (status, _, body) = collect(send_unix(&socket(host, sandbox), r).await.unwrap()).await;
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, v)
}

#[tokio::test]
async fn canonical_names_match_every_spelling_of_an_entry() {
    let (double, host) = setup().await;
    for sandbox in ["short", "full"] {
        for name in [
            "qwen2.5",
            "qwen2.5:latest",
            "registry.ollama.ai/library/qwen2.5:latest",
            "QWEN2.5",
            "library/qwen2.5",
        ] {
            let (status, v) =
                call(&host, sandbox, chat_request(name, json!({"stream": false}))).await;
            assert_eq!(status, 200, "{sandbox} {name}: {v}");
        }
        let (status, _) = call(
            &host,
            sandbox,
            chat_request("qwen2.5:7b", json!({"stream": false})),
        )
        .await;
        assert_eq!(status, 403, "{sandbox}: qwen2.5:7b is another tag");
    }
    assert_eq!(double.requests().len(), 10);
}

#[tokio::test]
async fn allowed_model_streams_and_denied_model_gets_the_bridges_message() {
    let (double, host) = setup().await;
    let r = post(
        "/api/chat",
        &json!({"model": "llama3.2:3b", "messages": [{"role": "user", "content": "hi"}]}),
    );
    let (status, _, body) = collect(send_unix(&socket(&host, "short"), r).await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(
        body.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
            > 2,
        "streamed NDJSON"
    );
    let (status, v) = call(
        &host,
        "short",
        chat_request("llama3.3:70b", json!({"stream": false})),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        v["error"],
        "ollama-bridge: model \"llama3.3:70b\" is not allowed for sandbox \"short\" (allowed: qwen2.5:latest, llama3.2:*)"
    );
    assert_eq!(double.requests().len(), 1);
}

#[tokio::test]
async fn the_name_ollama_would_use_is_the_one_decided_on() {
    let (double, host) = setup().await;
    // Chats that differ only in the keys naming the model.
    let cases = [
        // model wins over name when both are set.
        (json!({"model": "qwen2.5", "name": "llama3.3:70b"}), 200),
        (json!({"model": "llama3.3:70b", "name": "qwen2.5"}), 403),
        // Go matches keys case-insensitively: "Model" is decided on, and forwarded as "model".
        (json!({"Model": "llama3.3:70b"}), 403),
        (json!({"MODEL": "qwen2.5"}), 200),
    ];
    for (mut body, want) in cases {
        body["stream"] = json!(false);
        body["messages"] = json!([{"role": "user", "content": "hi"}]);
        let (s, v) = call(&host, "short", post("/api/chat", &body)).await;
        assert_eq!(s, want, "{body}: {v}");
    }
    let got = double.requests();
    assert_eq!(got.len(), 2);
    let last = got[1].json();
    assert_eq!(last["model"], "qwen2.5");
    assert!(last.get("MODEL").is_none());
}

/// Issue 15 item 9: Ollama's chat, generate, embed and embeddings requests have no
/// `name` field (`api/types.go`), so a `name` there names no model: the request has none
/// and is refused with 400 `model_required` (Ollama: 400 `model is required`), nothing
/// reaching Ollama and the audit naming no model. Show still reads the legacy `name`.
#[tokio::test]
async fn name_is_read_only_where_ollama_reads_it() {
    let (double, host) = setup().await;
    let bodies = [
        json!({"name": "qwen2.5"}),
        json!({"name": "llama3.3:70b"}),
        json!({"model": "", "name": "qwen2.5"}),
    ];
    let mut refused = 0;
    for path in [
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/embeddings",
    ] {
        for b in &bodies {
            let mut body = b.clone();
            body["stream"] = json!(false);
            body["messages"] = json!([{"role": "user", "content": "hi"}]);
            body["prompt"] = json!("hi");
            body["input"] = json!("hi");
            let (s, v) = call(&host, "short", post(path, &body)).await;
            assert_eq!(s, 400, "{path} {body}: {v}");
            assert_eq!(
                v["error"], "ollama-bridge: model is required (field \"model\")",
                "{path} {body}"
            );
            refused += 1;
        }
    }
    assert!(double.requests().is_empty(), "{:?}", double.requests());
    let audit = host.audit_records();
    assert_eq!(audit.len(), refused);
    for r in &audit {
        assert_eq!(r["reason"], "model_required", "{r}");
        assert_eq!(r["decision"], "deny", "{r}");
        assert_eq!(r["model"], Value::Null, "{r}");
        assert_eq!(r["status"], 400, "{r}");
    }
    // Show has the legacy field: name alone, or after an empty model, is decided on.
    for (body, want) in [
        (json!({"name": "qwen2.5"}), 200),
        (json!({"model": "", "name": "qwen2.5"}), 200),
        (json!({"name": "llama3.3:70b"}), 403),
        (json!({"model": "", "name": "llama3.3:70b"}), 403),
    ] {
        let (s, v) = call(&host, "short", post("/api/show", &body)).await;
        assert_eq!(s, want, "{body}: {v}");
    }
    assert_eq!(double.requests().len(), 2);
}

#[tokio::test]
async fn cloud_models_and_management_are_denied_by_default() {
    let (double, host) = setup().await;
    for m in ["gpt-oss:120b-cloud", "kimi-k2:cloud"] {
        let (s, v) = call(&host, "all", chat_request(m, json!({"stream": false}))).await;
        assert_eq!(s, 403, "{m}");
        assert!(v["error"].as_str().unwrap().contains("cloud model"), "{v}");
    }
    let cases = [
        ("POST", "/api/pull", json!({"model": "qwen2.5"})),
        ("DELETE", "/api/delete", json!({"model": "qwen2.5"})),
        (
            "POST",
            "/api/create",
            json!({"model": "x", "from": "qwen2.5"}),
        ),
        (
            "POST",
            "/api/copy",
            json!({"source": "qwen2.5", "destination": "x"}),
        ),
    ];
    for (m, p, b) in cases {
        let (s, v) = call(&host, "all", req(m, p, serde_json::to_vec(&b).unwrap())).await;
        assert_eq!(s, 403, "{m} {p}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("endpoint class \"manage\" is not allowed"),
            "{v}"
        );
    }
    assert!(double.requests().is_empty());
}

#[tokio::test]
async fn listings_show_only_allowed_models() {
    let (_double, host) = setup().await;
    let names = |v: &Value, key: &str, field: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m[field].as_str().unwrap().to_owned())
            .collect()
    };
    let (s, v) = call(&host, "short", req("GET", "/api/tags", "")).await;
    assert_eq!(s, 200);
    assert_eq!(
        names(&v, "models", "name"),
        ["qwen2.5:latest", "llama3.2:3b"]
    );
    let (_, v) = call(&host, "short", req("GET", "/api/ps", "")).await;
    assert_eq!(
        names(&v, "models", "name"),
        ["qwen2.5:latest", "llama3.2:3b"]
    );
    let (_, v) = call(&host, "short", req("GET", "/v1/models", "")).await;
    assert_eq!(names(&v, "data", "id"), ["qwen2.5:latest", "llama3.2:3b"]);
    // "*" still hides cloud models.
    let (_, v) = call(&host, "all", req("GET", "/api/tags", "")).await;
    assert!(
        !names(&v, "models", "name")
            .iter()
            .any(|n| n.contains("cloud")),
        "{v}"
    );
    // Single-model lookups of denied models are the bridge's 403.
    let (s, _) = call(
        &host,
        "short",
        post("/api/show", &json!({"model": "llama3.3:70b"})),
    )
    .await;
    assert_eq!(s, 403);
    let (s, v) = call(&host, "short", req("GET", "/v1/models/llama3.3:70b", "")).await;
    assert_eq!(s, 403);
    assert_eq!(v["error"]["code"], "model_not_allowed");
    let (s, _) = call(&host, "short", req("GET", "/v1/models/llama3.2:3b", "")).await;
    assert_eq!(s, 200);
}
