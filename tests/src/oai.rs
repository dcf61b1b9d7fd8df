//! Helpers for tests of OpenAI-compatible clients: the chain with `openai_via_native`,
//! standard chat requests with two tools, and readers for SSE answers.

use serde_json::{json, Value};

use crate::double::{Double, DoubleConfig};
use crate::harness::{config, socket, Guest, Host};
use crate::http::{collect, post, send_tcp};

/// Models and endpoint classes of the test sandboxes (`openai_via_native` at its default,
/// on).
pub const MODELS: &str = "models = [\"qwen2.5:7b\", \"llama3.2:*\", \"nomic-embed-text\"]\nendpoints = [\"chat\", \"embed\", \"openai\"]";
/// qwen2.5:7b pinned to a context of 8192.
pub const PINNED: &str = "[model.\"qwen2.5:7b\"]\nnum_ctx = 8192\n";

/// A sandbox with `openai_via_native = true`.
pub fn sandbox() -> String {
    format!("{MODELS}\nopenai_via_native = true")
}

/// A sandbox whose operator turned `openai_via_native` off: `/v1` passes through to
/// Ollama's own layer.
pub fn passthrough() -> String {
    format!("{MODELS}\nopenai_via_native = false")
}

/// The double, a host with sandbox "agent" (`sandbox()`, `PINNED`) and a guest.
pub async fn chain() -> (Double, Host, Guest) {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(&double.url(), &[("agent", &sandbox())], PINNED)).await;
    let guest = Guest::start(&socket(&host, "agent")).await;
    (double, host, guest)
}

/// Two tools: get_weather(city), get_time(timezone: "UTC" | "CET").
pub fn tools() -> Value {
    let tool = |name: &str, prop: &str, schema: Value| {
        json!({"type": "function", "function": {"name": name, "parameters":
            {"type": "object", "properties": {prop: schema}, "required": [prop]}}})
    };
    json!([
        tool("get_weather", "city", json!({"type": "string"})),
        tool(
            "get_time",
            "timezone",
            json!({"type": "string", "enum": ["UTC", "CET"]})
        ),
    ])
}

/// A chat request: system (3 words) + user (5 words) = 8 prompt tokens for the double.
pub fn chat(stream: bool, with_tools: bool) -> Value {
    let mut v = json!({"model": "qwen2.5:7b", "stream": stream, "messages": [
        {"role": "system", "content": "Use the tools."},
        {"role": "user", "content": "Weather and time in Paris?"},
    ]});
    if with_tools {
        v["tools"] = tools();
    }
    v
}

/// POSTs JSON on a new connection: status, content type, body.
pub async fn send(addr: std::net::SocketAddr, path: &str, body: &Value) -> (u16, String, Vec<u8>) {
    let (status, headers, bytes) = collect(send_tcp(addr, post(path, body)).await.unwrap()).await;
    let ct = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, bytes.to_vec())
}

/// Every `choices[0].delta.<key>` of the events.
pub fn deltas(events: &[Value], key: &str) -> Vec<Value> {
    events
        .iter()
        .filter_map(|e| e.pointer(&format!("/choices/0/delta/{key}")).cloned())
        .collect()
}

/// The streamed content, concatenated.
pub fn content(events: &[Value]) -> String {
    deltas(events, "content")
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

/// The last finish_reason of the events.
pub fn finish_reason(events: &[Value]) -> Option<String> {
    events
        .iter()
        .rev()
        .find_map(|e| e.pointer("/choices/0/finish_reason")?.as_str())
        .map(str::to_owned)
}

/// Asserts the two calls the double makes for `tools()`, in OpenAI's shape.
pub fn assert_two_calls(calls: &[Value], ctx: &str) {
    assert_eq!(calls.len(), 2, "{ctx}: {calls:?}");
    let want = [
        ("get_weather", json!({"city": "Paris"})),
        ("get_time", json!({"timezone": "UTC"})),
    ];
    for (i, (c, (name, args))) in calls.iter().zip(want).enumerate() {
        assert_eq!(c["index"], i, "{ctx}: {c}");
        assert_eq!(c["type"], "function", "{ctx}: {c}");
        assert_eq!(c["function"]["name"], name, "{ctx}: {c}");
        let parsed: Value = serde_json::from_str(c["function"]["arguments"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{ctx}: arguments are not a JSON string: {e}"));
        assert_eq!(parsed, args, "{ctx}");
        let id = c["id"].as_str().unwrap();
        assert!(id.starts_with("call_") && id.len() == 13, "{ctx}: {id}");
    }
    assert_ne!(calls[0]["id"], calls[1]["id"], "{ctx}");
}
