//! Table-driven tests of the chat request translation.

use serde_json::{json, Value};

use super::*;
use crate::json::parse_strict_object;

fn translate(body: &Value) -> Result<ChatRequest, TranslateError> {
    let text = serde_json::to_vec(body).expect("json");
    chat_request(&parse_strict_object(&text).expect("strict json"))
}

fn native(body: Value) -> Value {
    Value::Object(translate(&body).expect("translates").native)
}

fn defaults() -> Value {
    json!({"temperature": 1.0, "top_p": 1.0})
}

#[test]
fn minimal_request() {
    let r =
        translate(&json!({"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "hi"}]}))
            .expect("ok");
    assert_eq!(r.model, "qwen2.5:7b");
    assert!(!r.stream && !r.include_usage);
    assert_eq!(
        Value::Object(r.native),
        json!({"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "hi"}],
               "stream": true, "options": defaults()})
    );
}

#[test]
fn options_format_and_think() {
    let r = translate(&json!({
        "model": "m", "messages": [], "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": 5, "temperature": 0.2, "top_p": 0.9, "seed": 42, "stop": "END",
        "frequency_penalty": 0.5, "presence_penalty": 0.1,
        "response_format": {"type": "json_object"}, "reasoning_effort": "low",
        "user": "ignored", "n": 1, "parallel_tool_calls": true,
    }))
    .expect("ok");
    assert!(r.stream && r.include_usage);
    assert_eq!(
        Value::Object(r.native),
        json!({"model": "m", "messages": [], "stream": true,
               "options": {"num_predict": 5, "temperature": 0.2, "top_p": 0.9, "seed": 42,
                           "frequency_penalty": 0.5, "presence_penalty": 0.1, "stop": ["END"]},
               "format": "json", "think": "low"})
    );
}

#[test]
fn field_table() {
    let base = || json!({"model": "m", "messages": []});
    // (extra fields, key of the native body to look at, expected value or null if absent)
    let cases: Vec<(Value, &str, Value)> = vec![
        // Ollama's layer reads max_tokens only.
        (
            json!({"max_completion_tokens": 7, "max_tokens": 3}),
            "/options/num_predict",
            json!(3),
        ),
        (
            json!({"max_completion_tokens": 7}),
            "/options/num_predict",
            Value::Null,
        ),
        (
            json!({"stop": ["a", "b"]}),
            "/options/stop",
            json!(["a", "b"]),
        ),
        (json!({"temperature": 0}), "/options/temperature", json!(0)),
        (
            json!({"response_format": {"type": "text"}}),
            "/format",
            Value::Null,
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}}),
            "/format",
            json!({"type": "object"}),
        ),
        (json!({"reasoning_effort": "none"}), "/think", json!(false)),
        (json!({"reasoning_effort": "high"}), "/think", json!("high")),
        (
            json!({"reasoning": {"effort": "medium"}}),
            "/think",
            json!("medium"),
        ),
        (json!({"reasoning_effort": null}), "/think", Value::Null),
        (json!({"reasoning_effort": ""}), "/think", Value::Null),
        (
            json!({"reasoning_effort": "minimal"}),
            "/think",
            json!("low"),
        ),
        (json!({"reasoning_effort": "max"}), "/think", json!("max")),
        (json!({"reasoning_effort": "xhigh"}), "/think", json!("max")),
        (json!({"reasoning_effort": "ultra"}), "/think", json!("max")),
        (
            json!({"reasoning": {"effort": "none"}, "reasoning_effort": "high"}),
            "/think",
            json!(false),
        ),
        (
            json!({"reasoning": {}, "reasoning_effort": "high"}),
            "/think",
            Value::Null,
        ),
        (
            json!({"response_format": {"type": " JSON_Object "}}),
            "/format",
            json!("json"),
        ),
        (
            json!({"response_format": {"type": "xml"}}),
            "/format",
            Value::Null,
        ),
        (
            json!({"response_format": {"type": "json_schema"}}),
            "/format",
            Value::Null,
        ),
        (json!({"tools": []}), "/tools", Value::Null),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}),
            "/tools",
            json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        ),
        // tool_choice is ignored, as by Ollama's layer.
        (
            json!({"tool_choice": "none", "tools": [{"type": "function", "function": {"name": "f"}}]}),
            "/tools",
            json!([{"type": "function", "function": {"name": "f"}}]),
        ),
        (json!({"Stream": true}), "/stream", json!(true)),
        (json!({"logprobs": true}), "/logprobs", json!(true)),
        (json!({"logprobs": false}), "/logprobs", Value::Null),
        (json!({"top_logprobs": 3}), "/top_logprobs", json!(3)),
        (json!({"top_logprobs": 0}), "/top_logprobs", Value::Null),
    ];
    for (extra, pointer, want) in cases {
        let mut body = base();
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        let got = native(body.clone());
        assert_eq!(
            got.pointer(pointer).cloned().unwrap_or(Value::Null),
            want,
            "{body}"
        );
    }
}

#[test]
fn conversation_with_tools_and_images() {
    let got = native(json!({"model": "m", "messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "text", "text": "and the weather?"},
            {"type": "image_url", "image_url": "data:;base64,AAAA"},
        ]},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "call_2", "content": "10:00"},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_1", "name": "explicit", "content": "x"},
        {"role": "tool", "tool_call_id": "unknown", "content": "y"},
        {"role": "assistant", "content": "It is sunny.", "reasoning_content": "easy"},
    ]}));
    assert_eq!(
        got["messages"],
        json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "what is this"},
            {"role": "user", "content": "", "images": ["iVBORw0KGgo="]},
            {"role": "user", "content": "and the weather?"},
            {"role": "user", "content": "", "images": ["AAAA"]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}, "id": "call_1"},
                {"function": {"index": 1, "name": "get_time", "arguments": {}}, "id": "call_2"},
            ]},
            {"role": "tool", "content": "10:00", "tool_name": "get_time", "tool_call_id": "call_2"},
            {"role": "tool", "content": "sunny", "tool_name": "get_weather", "tool_call_id": "call_1"},
            {"role": "tool", "content": "x", "tool_name": "explicit", "tool_call_id": "call_1"},
            {"role": "tool", "content": "y", "tool_call_id": "unknown"},
            {"role": "assistant", "content": "It is sunny.", "thinking": "easy"},
        ])
    );
}

#[test]
fn bad_requests_are_refused_with_the_field() {
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"model": "m"}), "\"messages\" is required"),
        (json!({"messages": user}), "\"model\" is required"),
        (
            json!({"model": 5, "messages": user}),
            "\"model\" must be a string",
        ),
        (
            json!({"model": "m", "messages": {}}),
            "\"messages\" must be an array",
        ),
        (
            json!({"model": "m", "messages": ["hi"]}),
            "\"messages[0]\" must be an object",
        ),
        (
            json!({"model": "m", "messages": [{"content": "x"}]}),
            "\"messages[0].role\" is required",
        ),
        (
            json!({"model": "m", "messages": [{"role": "wizard"}]}),
            "unknown role \"wizard\"",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": 3}]}),
            "\"messages[0].content\" must be",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}),
            "does not fetch remote images",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
            "\"messages[0].content[0].input_audio.data\"",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "data:image/gif;base64,AAAA"}]}]}),
            "jpeg, jpg, png or webp",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "file"}]}]}),
            "\"file\" is not supported",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
            "\"messages[0].content[0].text\" must be a string",
        ),
        (
            json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}]}),
            "\"messages[0].tool_calls[0].function.arguments\": must be a JSON object",
        ),
        (
            json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}]}),
            "\"messages[0].tool_calls[0].function.name\" is required",
        ),
        (
            json!({"model": "m", "messages": user, "temperature": "hot"}),
            "\"temperature\" must be a number",
        ),
        (
            json!({"model": "m", "messages": user, "max_tokens": 1.5}),
            "\"max_tokens\" must be an integer",
        ),
        (
            json!({"model": "m", "messages": user, "stop": 1}),
            "\"stop\" must be",
        ),
        (
            json!({"model": "m", "messages": user, "top_logprobs": "2"}),
            "\"top_logprobs\" must be an integer",
        ),
        (
            json!({"model": "m", "messages": user, "logprobs": 1}),
            "\"logprobs\" must be a boolean",
        ),
        (
            json!({"model": "m", "messages": user, "stream": "yes"}),
            "\"stream\" must be a boolean",
        ),
        (
            json!({"model": "m", "messages": user, "stream_options": true}),
            "\"stream_options\" must be an object",
        ),
        (
            json!({"model": "m", "messages": user, "tools": {}}),
            "\"tools\" must be an array",
        ),
        (
            json!({"model": "m", "messages": user, "tools": [{"type": "function"}]}),
            "\"tools[0]\": each tool needs",
        ),
        (
            json!({"model": "m", "messages": user, "response_format": {"type": 1}}),
            "\"response_format.type\" must be a string",
        ),
        (
            json!({"model": "m", "messages": user, "reasoning_effort": "extreme"}),
            "\"reasoning_effort\": invalid reasoning value \"extreme\"",
        ),
        (
            json!({"model": "m", "messages": user, "reasoning": {"effort": "lots"}}),
            "\"reasoning.effort\": invalid reasoning value",
        ),
    ];
    for (body, want) in cases {
        let e = translate(&body).expect_err(&body.to_string());
        assert!(e.to_string().contains(want), "{body}: {e}");
        let b = e.to_error();
        assert_eq!(b.status(), 400);
        assert_eq!(b.reason, crate::error::Reason::BadRequest);
    }
}

/// A request whose one assistant tool call has these `arguments`.
fn with_arguments(arguments: &str) -> Value {
    json!({"model": "m", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [
            {"id": "c1", "function": {"name": "f", "arguments": arguments}}
        ]}
    ]})
}

#[test]
fn tool_call_arguments_are_as_strict_as_a_body() {
    let at = "\"messages[1].tool_calls[0].function.arguments\"";
    let deep = |n: usize| format!("{{\"a\":{}{}}}", "[".repeat(n), "]".repeat(n));
    for (arguments, says) in [
        (
            r#"{"city":"Paris","city":"Rome"}"#.to_owned(),
            "duplicate key",
        ),
        (
            r#"{"city":"Paris","CITY":"Rome"}"#.to_owned(),
            "differ only by case",
        ),
        // Go folds the Kelvin sign into `k`.
        ("{\"k\":1,\"\u{212a}\":2}".to_owned(), "differ only by case"),
        (r#"{"a":{"x":1,"X":2}}"#.to_owned(), "differ only by case"),
        (r#"{"a":[{"x":1,"x":2}]}"#.to_owned(), "duplicate key"),
        (deep(64), "nesting deeper than 64"),
        (r#"{"a":1} {"b":2}"#.to_owned(), "trailing characters"),
        (r#"{"a":1"#.to_owned(), "invalid JSON"),
        ("[1,2]".to_owned(), "must be a JSON object"),
        ("\"text\"".to_owned(), "must be a JSON object"),
    ] {
        let err = translate(&with_arguments(&arguments)).unwrap_err();
        assert_eq!(err.to_error().status(), 400, "{arguments:?}");
        let msg = err.to_string();
        assert!(msg.starts_with(at), "{arguments:?}: {msg}");
        assert!(msg.contains(says), "{arguments:?}: {msg}");
    }
    // Within the limit, and plain objects, still pass as objects.
    for (arguments, want) in [
        (deep(63), serde_json::from_str::<Value>(&deep(63)).unwrap()),
        (
            r#"{"city":"Paris","City2":1}"#.to_owned(),
            json!({"city": "Paris", "City2": 1}),
        ),
        (" {} ".to_owned(), json!({})),
        (" ".to_owned(), json!({})),
    ] {
        let n = native(with_arguments(&arguments));
        assert_eq!(
            n["messages"][1]["tool_calls"][0]["function"]["arguments"], want,
            "{arguments:?}"
        );
    }
}

/// Audio parts travel as images, as in Ollama's layer; parts keep their order, each a
/// message, and the message's tool fields go on the last one.
#[test]
fn parts_are_messages_and_audio_is_an_image() {
    let got = native(json!({"model": "m", "messages": [
        {"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            {"type": "text", "text": "transcribe"},
        ]},
        {"role": "assistant", "content": [{"type": "text", "text": "calling"}, {"type": "refusal", "refusal": "no"}],
         "tool_calls": [{"id": "c9", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "user", "content": []},
    ]}));
    assert_eq!(
        got["messages"],
        json!([
            {"role": "user", "content": "", "images": ["UklGRg=="]},
            {"role": "user", "content": "transcribe"},
            {"role": "assistant", "content": "calling", "tool_calls": [
                {"function": {"index": 0, "name": "f", "arguments": {}}, "id": "c9"}]},
            {"role": "user", "content": ""},
        ])
    );
}
