use std::sync::Arc;

use serde_json::{json, Value};

use super::*;

fn tools() -> Arc<Tools> {
    Arc::new(
        Tools::from_request(&json!([
            {"type": "function", "function": {"name": "get_weather", "parameters": {
                "type": "object", "required": ["city"], "additionalProperties": false,
                "properties": {"city": {"type": "string"},
                               "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}},
            {"type": "function", "function": {"name": "get_time", "parameters": {
                "type": "object", "properties": {"tz": {"type": "string"}}}}},
        ]))
        .unwrap(),
    )
}

/// Feeds `deltas`; the text passed (as it went), and the end.
fn run(deltas: &[&str]) -> (String, End) {
    let mut r = Recogniser::new(tools());
    let mut passed = String::new();
    for d in deltas {
        passed.push_str(&r.feed(d));
    }
    (passed, r.finish())
}

fn calls(end: &End) -> Value {
    let c: Vec<Value> = end
        .calls
        .iter()
        .map(|c| json!([c.name, Value::Object(c.arguments.clone())]))
        .collect();
    Value::Array(c)
}

/// Every way to cut `text` in two, in three, and one char at a time.
fn splits(text: &str) -> Vec<Vec<&str>> {
    let cuts: Vec<usize> = (0..=text.len())
        .filter(|&i| text.is_char_boundary(i))
        .collect();
    let mut out = vec![vec![text]];
    for &i in &cuts {
        out.push(vec![&text[..i], &text[i..]]);
        for &j in cuts.iter().filter(|&&j| j > i).step_by(11) {
            out.push(vec![&text[..i], &text[i..j], &text[j..]]);
        }
    }
    let chars: Vec<&str> = cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect();
    out.push(chars);
    out
}

const PARIS: &str = r#"[["get_weather", {"city": "Paris"}]]"#;
const BOTH: &str = r#"[["get_weather", {"city": "Paris"}], ["get_time", {"tz": "UTC"}]]"#;

/// (reply, text that stays content, calls)
fn forms() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        (r#"{"name": "get_weather", "parameters": {"city": "Paris"}}"#, "", PARIS),
        ("Let me check the weather.\n```json\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n```",
         "Let me check the weather.\n", PARIS),
        ("```\n[{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}, {\"name\": \"get_time\", \"parameters\": {\"tz\": \"UTC\"}}]\n```\n",
         "", BOTH),
        ("I will look it up. {\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}",
         "I will look it up. ", PARIS),
        ("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"UTC\"}}\n</tool_call>",
         "", BOTH),
        (r#"<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}"#, "", PARIS),
        (r#"[get_weather(city="Paris"), get_time(tz='UTC')]"#, "", BOTH),
        (r#"[{"name": "get_weather", "parameters": {"city": "Paris"}}, {"type": "function", "name": "get_time", "parameters": {"tz": "UTC"}}]"#, "", BOTH),
        ("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}\n{\"name\": \"get_time\", \"parameters\": {\"tz\": \"UTC\"}}", "", BOTH),
        ("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}; {\"name\": \"get_time\", \"parameters\": {}}",
         "", r#"[["get_weather", {"city": "Paris"}], ["get_time", {}]]"#),
        ("<tool_call>{\"name\": \"get_time\"}", "", r#"[["get_time", {}]]"#),
    ]
}

#[test]
fn every_form_at_every_split() {
    for (reply, text, want) in forms() {
        let want: Value = serde_json::from_str(want).unwrap();
        for deltas in splits(reply) {
            let (passed, end) = run(&deltas);
            assert_eq!(passed + &end.text, text, "{deltas:?}");
            assert_eq!(calls(&end), want, "{deltas:?}");
        }
    }
}

/// Replies that are not calls come out exactly as written, however they are cut.
#[test]
fn not_calls_come_out_as_written() {
    let replies = [
        r#"{"name": "get_wether", "parameters": {"city": "Paris"}}"#,
        r#"{"name": "get_weather", "parameters": {"city": 75001}}"#,
        r#"{"name": "get_weather", "parameters": {"city": "Paris", "unit": "kelvin"}}"#,
        r#"{"name": "get_weather", "parameters": {"city": "Paris", "when": "now"}}"#,
        r#"{"name": "get_weather", "parameters": {}}"#,
        r#"{"name": "get_weather", "parameters": {"city": "Paris"}, "extra": 1}"#,
        r#"{"name": "get_weather", "parameters": "not json"}"#,
        r#"[get_weather(city="Paris"), get_time(tz="UTC"), launch(x=1)]"#,
        r#"[get_weather("Paris")]"#,
        "```python\nget_weather(city=\"Paris\")\n```",
        "```python\n[get_weather(city=\"Paris\")]\n```",
        "```json\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}\n```\nThat should do it.",
        r#"{"name": "get_weather", "parameters": {"city": "Paris"}} is how you would call it."#,
        r#"{"name": "get_weather", "parameters": {"city": "Paris"}"#,
        r#"{"city": "Paris", "temperature": 21}"#,
        "Use {braces} and [brackets](http://x) and `code` and a < b, 3 > 2.",
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call> and more",
        "[]",
        "[1, 2, 3]",
        "<|python_tag|>print('hi')",
        "``` json\nnot json\n```",
        "plain text, nothing more",
    ];
    for reply in replies {
        for deltas in splits(reply) {
            let (passed, end) = run(&deltas);
            assert!(end.calls.is_empty(), "{reply} {deltas:?}");
            assert_eq!(passed + &end.text, reply, "{deltas:?}");
        }
    }
}

#[test]
fn text_that_cannot_start_a_call_passes_at_once() {
    let mut r = Recogniser::new(tools());
    assert_eq!(r.feed("Hello, "), "Hello, ");
    assert_eq!(r.feed("the weather is fine."), "the weather is fine.");
    assert!(!r.holding());
    // A `<` may begin `<tool_call>`: held for as long as it may.
    assert_eq!(r.feed(" a <"), " a ");
    assert_eq!(r.feed(" b"), "< b");
    assert_eq!(r.feed(" <tool_"), " ");
    assert_eq!(r.feed("box>"), "<tool_box>");
    assert_eq!(r.feed(" ``"), " ");
    assert_eq!(r.feed("`python\n"), "```python\n");
    // A brace that closes without a call is released when it closes.
    assert_eq!(r.feed("{\"name\": "), "");
    assert_eq!(r.feed("1} ok"), "{\"name\": 1} ok");
    assert_eq!(r.feed("[see"), "[see");
    // JSON that is data, not a call, is released from its first key.
    assert_eq!(r.feed(" {\"ci"), " {\"ci");
    assert_eq!(r.feed("ty\": 1} {\"ty"), "ty\": 1} ");
    assert_eq!(r.feed("pe_of\": 1}"), "{\"type_of\": 1}");
    assert_eq!(r.feed(" [{\"temp\": 21}]"), " [{\"temp\": 21}]");
    assert_eq!(r.finish(), End::default());
}

#[test]
fn a_call_is_held_until_the_end() {
    let mut r = Recogniser::new(tools());
    assert_eq!(r.feed("Sure. {\"name\": \"get_time\""), "Sure. ");
    assert_eq!(r.feed(", \"parameters\": {}}"), "");
    assert!(r.holding());
    let end = r.finish();
    assert_eq!(end.text, "");
    assert_eq!(end.calls.len(), 1);
}

#[test]
fn a_long_hold_is_released() {
    let mut r = Recogniser::new(tools());
    let mut passed = r.feed("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"");
    assert_eq!(passed, "");
    let chunk = "x".repeat(1024);
    for _ in 0..64 {
        passed.push_str(&r.feed(&chunk));
    }
    assert!(!passed.is_empty() && !r.holding(), "released past MAX_HOLD");
    passed.push_str(&r.feed("\"}}"));
    let end = r.finish();
    assert!(end.calls.is_empty());
    assert!(passed.ends_with("x\"}}"));
}

#[test]
fn giving_up_returns_the_held_text() {
    let mut r = Recogniser::new(tools());
    assert_eq!(r.feed("ok {\"name\""), "ok ");
    assert_eq!(r.finish_as_text(), "{\"name\"");
    assert_eq!(r.feed("{\"name\""), "{\"name\"");
}

#[path = "native_tests.rs"]
mod native;
