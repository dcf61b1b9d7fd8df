use std::sync::Arc;

use serde_json::{json, Value};

use super::tools;
use crate::salvage::ChatSalvage;

fn chunk(content: &str, done: bool) -> String {
    let mut v = json!({"model": "llama3.2:3b", "created_at": "t",
        "message": {"role": "assistant", "content": content}, "done": done});
    if done {
        v["done_reason"] = json!("stop");
        v["eval_count"] = json!(7);
    }
    v.to_string()
}

fn run(lines: &[String]) -> (Vec<Value>, usize) {
    let mut s = ChatSalvage::new(Arc::clone(&tools()), "rid");
    let mut out = Vec::new();
    for l in lines {
        s.line(l.as_bytes(), &mut out);
    }
    s.finish(&mut out);
    let v = out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    (v, s.salvaged())
}

#[test]
fn calls_in_the_final_chunk() {
    let lines = [
        chunk("Checking. <tool_", false),
        chunk("call>{\"name\": \"get_weather\", \"argu", false),
        chunk("ments\": {\"city\": \"Paris\"}}</tool_call>", false),
        chunk("", true),
    ];
    let (out, n) = run(&lines);
    assert_eq!(n, 1);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0]["message"]["content"], "Checking. ");
    let last = &out[1];
    assert_eq!(last["done"], true);
    assert_eq!(last["eval_count"], 7);
    assert_eq!(last["message"]["content"], "");
    let call = &last["message"]["tool_calls"][0];
    assert_eq!(
        call["function"],
        json!({"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}})
    );
    let id = call["id"].as_str().unwrap();
    assert!(id.starts_with("call_") && id.len() == 13, "{id}");
}

#[test]
fn a_non_streamed_answer() {
    let line = chunk("[get_weather(city=\"Paris\"), get_time(tz=\"UTC\")]", true);
    let (out, n) = run(&[line]);
    assert_eq!(n, 2);
    let calls = out[0]["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls[1]["function"]["index"], 1);
    assert_ne!(calls[0]["id"], calls[1]["id"]);
}

#[test]
fn plain_text_passes_byte_for_byte() {
    let lines = [
        chunk("Hello", false),
        chunk(" world", false),
        chunk("", true),
    ];
    let (out, n) = run(&lines);
    assert_eq!(n, 0);
    let want: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(out, want);
}

#[test]
fn not_a_call_is_released_in_the_final_chunk() {
    let lines = [
        chunk("{\"name\": \"nope\", ", false),
        chunk("\"parameters\": {", false),
        chunk("}", false),
    ];
    let mut all = lines.to_vec();
    all.push(chunk("", true));
    let (out, _) = run(&all);
    let text: String = out
        .iter()
        .map(|v| v["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "{\"name\": \"nope\", \"parameters\": {}");
    assert!(out.iter().all(|v| v["message"].get("tool_calls").is_none()));
}

#[test]
fn ollamas_own_calls_win_and_errors_flush() {
    let own = json!({"model": "m", "message": {"role": "assistant", "content": "",
        "tool_calls": [{"function": {"index": 0, "name": "get_time", "arguments": {}}}]}, "done": false});
    let (out, n) = run(&[chunk("{\"name\"", false), own.to_string(), chunk("", true)]);
    assert_eq!(n, 0);
    assert_eq!(out[0]["message"]["content"], "{\"name\"");
    assert_eq!(
        out[0]["message"]["tool_calls"][0]["function"]["name"],
        "get_time"
    );
    let (out, _) = run(&[chunk("{\"name\"", false), r#"{"error":"boom"}"#.to_owned()]);
    assert_eq!(out[0]["message"]["content"], "{\"name\"");
    assert_eq!(out[1], json!({"error": "boom"}));
    // Cut off without a final chunk: the held text still goes out.
    let (out, _) = run(&[chunk("[get_time(", false)]);
    assert_eq!(out[0]["message"]["content"], "[get_time(");
}
