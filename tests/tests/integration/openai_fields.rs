//! Issue 16: OpenAI clients get the native path by default. Each `/v1/chat/completions`
//! field, sent to a sandbox that does not mention `openai_via_native`: what the double
//! received on `/api/chat`, and what the client got back, streamed or not. Raw HTTP on
//! the sandbox's socket (the cheapest client); the real clients are in `openai.rs`.
//! The mapping follows Ollama's own `/v1` layer (`openai/openai.go` at ollama main
//! `fb30760`, after v0.33.0-rc2).

use bridge_tests::double::{Double, DoubleConfig, THINKING};
use bridge_tests::harness::{config, socket, Host};
use bridge_tests::http::{collect, post, send_unix, sse_events};
use bridge_tests::oai::tools;
use serde_json::{json, Value};

/// A sandbox with the defaults: no `openai_via_native` key.
const SANDBOX: &str = "models = [\"qwen2.5:7b\"]\nendpoints = [\"chat\", \"openai\"]";
/// The double's answer to "hi there".
const HELLO: &str = "Hello from the double. You said: hi there";

/// One field: the request's extra fields, pointers into the body the double received
/// (`null` = absent) and into the client's answer as [`answer`] sums it up.
struct Case {
    what: &'static str,
    extra: Value,
    sent: Vec<(&'static str, Value)>,
    got: Vec<(&'static str, Value)>,
}

fn case(
    what: &'static str,
    extra: Value,
    sent: Vec<(&'static str, Value)>,
    got: Vec<(&'static str, Value)>,
) -> Case {
    Case {
        what,
        extra,
        sent,
        got,
    }
}

/// The client's answer, streamed or not, as one object: `role`, `content`, `reasoning`
/// (null when none), `calls` (`name` and parsed `arguments`, in index order),
/// `finish_reason`, `usage` (null when none), `done` (the stream ended with `[DONE]`).
fn answer(stream: bool, body: &[u8]) -> Value {
    let calls = |list: Vec<Value>| -> Value {
        list.iter()
            .map(|c| {
                let args = c["function"]["arguments"]
                    .as_str()
                    .expect("string arguments");
                json!({"name": c["function"]["name"],
                       "arguments": serde_json::from_str::<Value>(args).expect("JSON arguments")})
            })
            .collect()
    };
    if !stream {
        let v: Value = serde_json::from_slice(body).expect("a JSON answer");
        assert_eq!(v["object"], "chat.completion", "{v}");
        let m = &v["choices"][0]["message"];
        let list = m["tool_calls"].as_array().cloned().unwrap_or_default();
        let lp = v["choices"][0]["logprobs"]["content"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        return json!({
            "role": m["role"], "content": m["content"], "reasoning": m["reasoning"],
            "calls": calls(list), "finish_reason": v["choices"][0]["finish_reason"],
            "usage": v["usage"], "done": Value::Null, "logprobs": logprobs(&lp),
        });
    }
    let events = sse_events(body);
    let done = events.last() == Some(&json!("[DONE]"));
    let chunks: Vec<&Value> = events.iter().filter(|e| e.is_object()).collect();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk", "{c}");
    }
    let text = |key: &str| -> Value {
        let parts: Vec<&str> = chunks
            .iter()
            .filter_map(|c| c.pointer(&format!("/choices/0/delta/{key}"))?.as_str())
            .collect();
        if parts.is_empty() {
            Value::Null
        } else {
            json!(parts.concat())
        }
    };
    let mut list: Vec<Value> = chunks
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/tool_calls")?
                .as_array()
                .cloned()
        })
        .flatten()
        .collect();
    list.sort_by_key(|c| c["index"].as_u64());
    let lp: Vec<Value> = chunks
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/logprobs/content")?
                .as_array()
                .cloned()
        })
        .flatten()
        .collect();
    json!({
        "logprobs": logprobs(&lp),
        "role": chunks.first().and_then(|c| c.pointer("/choices/0/delta/role")).cloned(),
        "content": text("content"),
        "reasoning": text("reasoning"),
        "calls": calls(list),
        "finish_reason": chunks.iter().rev()
            .find_map(|c| c.pointer("/choices/0/finish_reason").filter(|f| !f.is_null()))
            .cloned(),
        "usage": chunks.iter().find_map(|c| c.get("usage")).cloned(),
        "done": done,
    })
}

/// The tokens of an answer's `logprobs.content`, joined, and how many alternatives the
/// first has (null when there are none).
fn logprobs(entries: &[Value]) -> Value {
    if entries.is_empty() {
        return Value::Null;
    }
    let tokens: String = entries
        .iter()
        .map(|e| e["token"].as_str().expect("a token"))
        .collect();
    json!({"tokens": tokens, "top": entries[0]["top_logprobs"].as_array().map(Vec::len)})
}

fn weather_and_time() -> Value {
    json!([
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"name": "get_time", "arguments": {"timezone": "UTC"}},
    ])
}

fn cases() -> Vec<Case> {
    let defaults = json!({"temperature": 1.0, "top_p": 1.0});
    vec![
        case(
            "the defaults: the native path, Ollama's /v1 sampling defaults",
            json!({}),
            vec![
                ("/stream", json!(true)),
                ("/options", defaults.clone()),
                (
                    "/messages",
                    json!([{"role": "user", "content": "hi there"}]),
                ),
            ],
            vec![
                ("/role", json!("assistant")),
                ("/content", json!(HELLO)),
                ("/finish_reason", json!("stop")),
                ("/usage/completion_tokens", json!(8)),
                ("/calls", json!([])),
                ("/logprobs", Value::Null),
            ],
        ),
        case(
            "logprobs and top_logprobs, streamed",
            json!({"logprobs": true, "top_logprobs": 2, "stream": true}),
            vec![("/logprobs", json!(true)), ("/top_logprobs", json!(2))],
            vec![
                ("/logprobs", json!({"tokens": HELLO, "top": 2})),
                ("/content", json!(HELLO)),
            ],
        ),
        case(
            "logprobs, whole",
            json!({"logprobs": true}),
            vec![("/logprobs", json!(true)), ("/top_logprobs", Value::Null)],
            vec![("/logprobs", json!({"tokens": HELLO, "top": 0}))],
        ),
        case(
            "stream",
            json!({"stream": true}),
            vec![("/stream", json!(true))],
            vec![
                ("/role", json!("assistant")),
                ("/content", json!(HELLO)),
                ("/finish_reason", json!("stop")),
                ("/usage", Value::Null),
                ("/done", json!(true)),
            ],
        ),
        case(
            "stream_options.include_usage",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
            vec![("/stream_options", Value::Null)],
            vec![
                ("/usage/completion_tokens", json!(8)),
                ("/done", json!(true)),
            ],
        ),
        case(
            "max_tokens",
            json!({"max_tokens": 2}),
            vec![("/options/num_predict", json!(2))],
            vec![
                ("/content", json!("Hello from ")),
                ("/finish_reason", json!("length")),
            ],
        ),
        case(
            "max_completion_tokens is ignored, as by Ollama's layer",
            json!({"max_completion_tokens": 2, "stream": true}),
            vec![("/options", defaults.clone())],
            vec![
                ("/content", json!(HELLO)),
                ("/finish_reason", json!("stop")),
            ],
        ),
        case(
            "stop (a string)",
            json!({"stop": "END"}),
            vec![("/options/stop", json!(["END"]))],
            vec![],
        ),
        case(
            "stop (a list)",
            json!({"stop": ["a", "b"]}),
            vec![("/options/stop", json!(["a", "b"]))],
            vec![],
        ),
        case(
            "seed",
            json!({"seed": 42}),
            vec![("/options/seed", json!(42))],
            vec![],
        ),
        case(
            "temperature and top_p",
            json!({"temperature": 0.2, "top_p": 0.5}),
            vec![
                ("/options/temperature", json!(0.2)),
                ("/options/top_p", json!(0.5)),
            ],
            vec![],
        ),
        case(
            "frequency_penalty and presence_penalty",
            json!({"frequency_penalty": 0.5, "presence_penalty": 0.25}),
            vec![
                ("/options/frequency_penalty", json!(0.5)),
                ("/options/presence_penalty", json!(0.25)),
            ],
            vec![],
        ),
        case(
            "response_format json_object",
            json!({"response_format": {"type": "json_object"}}),
            vec![("/format", json!("json"))],
            vec![],
        ),
        case(
            "response_format json_schema",
            json!({"response_format": {"type": "json_schema", "json_schema":
                {"name": "answer", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}}),
            vec![(
                "/format",
                json!({"type": "object", "properties": {"a": {"type": "string"}}}),
            )],
            vec![],
        ),
        case(
            "response_format text, or a type Ollama's layer does not know: no format",
            json!({"response_format": {"type": "xml"}}),
            vec![("/format", Value::Null)],
            vec![("/content", json!(HELLO))],
        ),
        case(
            "reasoning_effort, streamed: reasoning deltas",
            json!({"reasoning_effort": "minimal", "stream": true}),
            vec![("/think", json!("low"))],
            vec![
                ("/reasoning", json!(THINKING)),
                ("/content", json!(HELLO)),
                ("/finish_reason", json!("stop")),
            ],
        ),
        case(
            "reasoning_effort, whole: message.reasoning",
            json!({"reasoning_effort": "high"}),
            vec![("/think", json!("high"))],
            vec![("/reasoning", json!(THINKING)), ("/content", json!(HELLO))],
        ),
        case(
            "reasoning_effort none",
            json!({"reasoning_effort": "none", "stream": true}),
            vec![("/think", json!(false))],
            vec![("/reasoning", Value::Null), ("/content", json!(HELLO))],
        ),
        case(
            "reasoning.effort (wins over reasoning_effort), clamped to Ollama's max",
            json!({"reasoning": {"effort": "xhigh"}, "reasoning_effort": "none"}),
            vec![("/think", json!("max"))],
            vec![("/reasoning", json!(THINKING))],
        ),
        case(
            "tools, streamed",
            json!({"tools": tools(), "stream": true}),
            vec![("/tools", tools())],
            vec![
                ("/calls", weather_and_time()),
                ("/content", json!("Let me check.")),
                ("/finish_reason", json!("tool_calls")),
            ],
        ),
        case(
            "tools, whole",
            json!({"tools": tools()}),
            vec![("/tools", tools())],
            vec![
                ("/calls", weather_and_time()),
                ("/finish_reason", json!("tool_calls")),
            ],
        ),
        case(
            "tool_choice is ignored, as by Ollama's layer",
            json!({"tools": tools(), "tool_choice": "none", "stream": true}),
            vec![("/tools", tools())],
            vec![
                ("/calls", weather_and_time()),
                ("/finish_reason", json!("tool_calls")),
            ],
        ),
        case(
            "finish_reason length wins over tool_calls",
            json!({"tools": tools(), "max_tokens": 1, "stream": true}),
            vec![("/options/num_predict", json!(1))],
            vec![
                ("/content", json!("Let ")),
                ("/calls", weather_and_time()),
                ("/finish_reason", json!("length")),
            ],
        ),
        case(
            "messages: text and image parts, each its own message",
            json!({"messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "text", "text": "hi there"},
                ]},
            ]}),
            vec![(
                "/messages",
                json!([
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "What is this?"},
                    {"role": "user", "content": "", "images": ["iVBORw0KGgo="]},
                    {"role": "user", "content": "hi there"},
                ]),
            )],
            vec![("/content", json!(HELLO))],
        ),
        case(
            "messages: assistant tool_calls in the history, the tool role and tool_call_id",
            json!({"messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_w", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_w", "content": "sunny"},
            ], "tools": tools()}),
            vec![
                (
                    "/messages/1",
                    json!({"role": "assistant", "content": "", "tool_calls": [
                        {"id": "call_w", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}]}),
                ),
                (
                    "/messages/2",
                    json!({"role": "tool", "content": "sunny", "tool_name": "get_weather", "tool_call_id": "call_w"}),
                ),
            ],
            vec![
                ("/content", json!("The tool said: sunny")),
                ("/calls", json!([])),
                ("/finish_reason", json!("stop")),
            ],
        ),
        case(
            "fields Ollama's layer ignores are not sent",
            json!({"n": 2, "user": "u1", "logit_bias": {"50256": -100}, "parallel_tool_calls": false,
                   "store": true, "metadata": {"k": "v"}, "service_tier": "auto",
                   "tool_choice": "auto", "max_completion_tokens": 9}),
            vec![
                ("/options", defaults),
                ("/n", Value::Null),
                ("/user", Value::Null),
                ("/logprobs", Value::Null),
                ("/tools", Value::Null),
            ],
            vec![("/content", json!(HELLO))],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_field_reaches_api_chat_and_comes_back_as_ollamas_v1_layer_maps_it() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(&double.url(), &[("agent", SANDBOX)], "")).await;
    let sock = socket(&host, "agent");
    for c in cases() {
        let mut body =
            json!({"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "hi there"}]});
        for (k, v) in c.extra.as_object().expect("an object") {
            body[k] = v.clone();
        }
        let stream = body["stream"] == json!(true);
        double.clear();
        let resp = send_unix(&sock, post("/v1/chat/completions", &body))
            .await
            .unwrap();
        let (status, headers, bytes) = collect(resp).await;
        let what = c.what;
        assert_eq!(status, 200, "{what}: {}", String::from_utf8_lossy(&bytes));
        let ct = headers["content-type"].to_str().unwrap();
        let want_ct = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        assert!(ct.starts_with(want_ct), "{what}: {ct}");
        let got = double.requests();
        assert_eq!(got.len(), 1, "{what}");
        assert_eq!(got[0].path, "/api/chat", "{what}");
        let sent = got[0].json();
        for (pointer, want) in &c.sent {
            let have = sent.pointer(pointer).cloned().unwrap_or(Value::Null);
            assert_eq!(&have, want, "{what}: sent {pointer} in {sent}");
        }
        let back = answer(stream, &bytes);
        for (pointer, want) in &c.got {
            let have = back.pointer(pointer).cloned().unwrap_or(Value::Null);
            assert_eq!(&have, want, "{what}: got {pointer} in {back}");
        }
    }
    // The one field Ollama's layer refuses: an unknown reasoning effort, 400 before Ollama.
    double.clear();
    let body = json!({"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "hi"}],
                      "reasoning_effort": "extreme"});
    let resp = send_unix(&sock, post("/v1/chat/completions", &body))
        .await
        .unwrap();
    let (status, _, bytes) = collect(resp).await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid reasoning value \"extreme\""),
        "{v}"
    );
    assert!(double.requests().is_empty());
}
