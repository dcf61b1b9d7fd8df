use super::*;
use crate::json::parse_strict_object;

fn native(s: &str) -> Result<CheckedBody, JsonError> {
    CheckedBody::parse_native(Bytes::from(s.to_owned()))
}

#[test]
fn the_same_bodies_are_refused_as_by_the_tree_parser() {
    for bad in [
        "",
        "  ",
        "[]",
        "1",
        "\"x\"",
        "null",
        "{",
        "{}x",
        r#"{"model":"a","model":"b"}"#,
        r#"{"model":"a","MODEL":"b"}"#,
        r#"{"messages":[{"role":"user","role":"x"}]}"#,
        r#"{"messages":[{"content":"a","CONTENT":"b"}]}"#,
        r#"{"prompt":"a","Prompt":"b"}"#,
        r#"{"images":[1e400]}"#,
        "{\"prompt\":\"\\ud800\"}",
    ] {
        assert!(native(bad).is_err(), "accepted {bad:?}");
        assert!(
            parse_strict_object(bad.as_bytes()).is_err(),
            "tree accepted {bad:?}"
        );
    }
    let deep = format!("{{\"messages\":{}{}}}", "[".repeat(70), "]".repeat(70));
    assert!(native(&deep).is_err());
    assert!(native("{\"prompt\":\"\u{fffd}\"}").is_ok());
    assert!(CheckedBody::parse_native(Bytes::from_static(b"{\"prompt\":\"\xff\"}")).is_err());
}

#[test]
fn bulky_fields_are_kept_as_written_and_the_rest_parsed() {
    let text = r#"{"model":"qwen2.5:7b","Messages":[{"role":"user","content":"hi \u00e9 0.1000"}],"options":{"num_ctx":1e6},"prompt":"p","stream":false,"images":["aGk="]}"#;
    let b = native(text).unwrap();
    let mut kept: Vec<&str> = b.kept_fields().collect();
    kept.sort();
    assert_eq!(kept, ["Messages", "images", "prompt"]);
    assert_eq!(b.fields["model"], "qwen2.5:7b");
    assert!(b.fields.contains_key("options"));
    let out = String::from_utf8(b.to_vec()).unwrap();
    // Kept fields go out byte for byte, escapes and all.
    assert!(
        out.contains(r#""Messages":[{"role":"user","content":"hi \u00e9 0.1000"}]"#),
        "{out}"
    );
    let tree = parse_strict_object(text.as_bytes()).unwrap();
    assert_eq!(b.to_value(), Value::Object(tree));
    let whole = b.to_vec();
    let chunks = b.chunks();
    assert_eq!(chunks.len(), 1 + 2 * 3);
    assert_eq!(chunks.concat(), whole);
}

#[test]
fn rewritten_fields_are_what_goes_out() {
    let mut b = native(r#"{"model":"m","options":{"num_ctx":1e6},"prompt":"x"}"#).unwrap();
    b.fields["options"]["num_ctx"] = Value::from(16384);
    b.fields.remove("model");
    let v: Value = serde_json::from_slice(&b.to_vec()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"options":{"num_ctx":16384},"prompt":"x"})
    );
}

#[test]
fn parse_all_keeps_nothing_and_holds_no_source() {
    let b = CheckedBody::parse_all(Bytes::from_static(br#"{"messages":[],"model":"m"}"#)).unwrap();
    assert_eq!(b.kept_fields().count(), 0);
    assert!(b.source.is_empty());
    assert_eq!(b.fields["messages"], serde_json::json!([]));
    let empty = CheckedBody::parse_all(Bytes::from_static(b"{}")).unwrap();
    assert_eq!(empty.to_vec(), b"{}");
}

#[test]
fn one_field_as_a_value_kept_or_parsed() {
    let b = native(r#"{"model":"m","Tools":[{"type":"function"}],"stream":true}"#).unwrap();
    assert!(b.kept_fields().any(|k| k == "Tools"));
    assert_eq!(
        b.field("tools"),
        Some(serde_json::json!([{"type": "function"}]))
    );
    assert_eq!(b.field("stream"), Some(Value::Bool(true)));
    assert_eq!(b.field("messages"), None);
    let all = CheckedBody::parse_all(Bytes::from_static(br#"{"tools":[]}"#)).unwrap();
    assert_eq!(all.field("tools"), Some(serde_json::json!([])));
}
