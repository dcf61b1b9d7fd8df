//! Tool-call salvage (`protocol::salvage::Recogniser`): model text, cut into arbitrary
//! deltas, against two offered tools (`get_weather(city, unit?)` with
//! `additionalProperties: false` and an enum, `get_time(timezone?)`).
//!
//! Input: byte 0 = split seed, byte 1 = largest delta (1..=256 bytes), then the text
//! (UTF-8; other inputs are skipped).
//!
//! Properties: nothing panics; the result (text passed, text released at the end, calls)
//! is the same whether the text came whole, in random deltas or char by char; without
//! calls, the text comes out exactly as written; with calls, what came out is a prefix of
//! the text (the text before the calls), and every call names an offered tool with
//! arguments its schema accepts; text is never held past `MAX_HOLD` plus one delta.
#![no_main]

use std::sync::Arc;

use fuzz_support::Rng;
use libfuzzer_sys::fuzz_target;
use protocol::salvage::{End, Recogniser, Tools, MAX_HOLD};
use serde_json::json;

fn tools() -> Arc<Tools> {
    Arc::new(
        Tools::from_request(&json!([
            {"type": "function", "function": {"name": "get_weather", "parameters": {
                "type": "object", "required": ["city"], "additionalProperties": false,
                "properties": {"city": {"type": "string"},
                               "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}},
            {"type": "function", "function": {"name": "get_time", "parameters": {
                "type": "object", "properties": {"timezone": {"type": "string"}}}}},
        ]))
        .expect("two tools"),
    )
}

/// Feeds `deltas`: the text passed and the end.
fn run(tools: &Arc<Tools>, deltas: &[&str]) -> (String, End) {
    let mut r = Recogniser::new(tools.clone());
    let mut passed = String::new();
    let mut fed = 0;
    for d in deltas {
        passed.push_str(&r.feed(d));
        fed += d.len();
        assert!(fed - passed.len() <= MAX_HOLD + d.len(), "held too much");
    }
    (passed, r.finish())
}

/// `text` cut into deltas of 1..=max bytes, on char boundaries.
fn cut<'a>(rng: &mut Rng, text: &'a str, max: usize) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let mut end = (at + 1 + rng.next_u64() as usize % max).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(&text[at..end]);
        at = end;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [seed, max, rest @ ..] = data else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let tools = tools();
    let whole = run(&tools, &[text]);
    let mut rng = Rng(u64::from(*seed));
    let random = run(&tools, &cut(&mut rng, text, 1 + usize::from(*max)));
    let chars: Vec<&str> = text
        .char_indices()
        .map(|(i, c)| &text[i..i + c.len_utf8()])
        .collect();
    let by_char = run(&tools, &chars);
    for other in [&random, &by_char] {
        assert_eq!(
            whole.0.clone() + &whole.1.text,
            other.0.clone() + &other.1.text
        );
        assert_eq!(whole.1.calls, other.1.calls);
    }
    let out = whole.0 + &whole.1.text;
    if whole.1.calls.is_empty() {
        assert_eq!(out, text);
    } else {
        assert!(
            text.starts_with(&out),
            "{out:?} is not the text before the calls"
        );
        for c in &whole.1.calls {
            assert!(tools.accepts(&c.name, &c.arguments), "{c:?}");
        }
    }
});
