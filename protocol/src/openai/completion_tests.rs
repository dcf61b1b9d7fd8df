//! Tests of the `/v1/completions` ↔ `/api/generate` translation: the request table, the
//! SSE stream (split anywhere, echo, usage, errors) and the gathered answer.

use serde_json::{json, Value};

use super::*;
use crate::json::parse_strict_object;
use crate::openai::LineSplitter;

fn translate(body: &Value) -> Result<CompletionRequest, TranslateError> {
    let text = serde_json::to_vec(body).expect("json");
    completion_request(&parse_strict_object(&text).expect("strict json"))
}

fn native(body: Value) -> Value {
    Value::Object(translate(&body).expect("translates").native)
}

fn meta() -> Meta {
    completion_meta("r1", 1_795_000_000, "qwen2.5:7b")
}

#[test]
fn minimal_request() {
    let r = translate(&json!({"model": "qwen2.5:7b", "prompt": "Once upon"})).expect("ok");
    assert_eq!(r.model, "qwen2.5:7b");
    assert!(!r.stream && !r.include_usage);
    assert_eq!(r.echo, None);
    // As Ollama's FromCompleteRequest: temperature and top_p default to 1.0.
    assert_eq!(
        Value::Object(r.native),
        json!({"model": "qwen2.5:7b", "prompt": "Once upon", "stream": true,
               "options": {"temperature": 1.0, "top_p": 1.0}})
    );
}

#[test]
fn every_field_ollamas_layer_reads() {
    let r = translate(&json!({
        "model": "m", "prompt": "def add(a, b):", "suffix": "\n\nprint(add(1, 2))",
        "stream": true, "stream_options": {"include_usage": true},
        "max_tokens": 5, "temperature": 0.2, "top_p": 0.9, "seed": 42, "stop": ["\n\n", "END"],
        "frequency_penalty": 0.5, "presence_penalty": -0.1, "echo": true,
        // Ignored, as by Ollama's layer (and not read from a chat's field names).
        "n": 1, "best_of": 1, "logprobs": 2, "user": "u", "logit_bias": {"50256": -100},
        "max_completion_tokens": 99,
    }))
    .expect("ok");
    assert!(r.stream && r.include_usage);
    assert_eq!(r.echo.as_deref(), Some("def add(a, b):"));
    assert_eq!(
        Value::Object(r.native),
        json!({"model": "m", "prompt": "def add(a, b):", "stream": true,
               "suffix": "\n\nprint(add(1, 2))",
               "options": {"num_predict": 5, "temperature": 0.2, "top_p": 0.9, "seed": 42,
                           "frequency_penalty": 0.5, "presence_penalty": -0.1,
                           "stop": ["\n\n", "END"]}})
    );
}

#[test]
fn field_table() {
    let base = || json!({"model": "m", "prompt": "p"});
    // (extra fields, key of the native body, expected value or null if absent)
    let cases: Vec<(Value, &str, Value)> = vec![
        (json!({"stop": "END"}), "/options/stop", json!(["END"])),
        (json!({"stop": null}), "/options/stop", Value::Null),
        (json!({"max_tokens": 0}), "/options/num_predict", json!(0)),
        (
            json!({"max_tokens": null}),
            "/options/num_predict",
            Value::Null,
        ),
        (json!({"temperature": 0}), "/options/temperature", json!(0)),
        (json!({"top_p": 0}), "/options/top_p", json!(0)),
        (json!({"seed": -1}), "/options/seed", json!(-1)),
        (json!({"suffix": ""}), "/suffix", Value::Null),
        (json!({"suffix": null}), "/suffix", Value::Null),
        (
            json!({"prompt": ["only one"]}),
            "/prompt",
            json!("only one"),
        ),
        (json!({"prompt": null}), "/prompt", json!("")),
        (json!({"prompt": ""}), "/prompt", json!("")),
        (json!({"echo": false}), "/prompt", json!("p")),
        (json!({"Max_Tokens": 3}), "/options/num_predict", json!(3)),
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
fn refusals_name_the_field() {
    let cases = [
        (json!({"prompt": "p"}), r#""model" is required"#),
        (
            json!({"model": "", "prompt": "p"}),
            r#""model" is required"#,
        ),
        (
            json!({"model": 7, "prompt": "p"}),
            r#""model" must be a string"#,
        ),
        (
            json!({"model": "m", "prompt": 7}),
            r#""prompt" must be a string"#,
        ),
        (
            json!({"model": "m", "prompt": ["a", "b"]}),
            r#""prompt": must be one string"#,
        ),
        (
            json!({"model": "m", "prompt": [1, 2, 3]}),
            r#""prompt": must be one string"#,
        ),
        (
            json!({"model": "m", "prompt": []}),
            r#""prompt": must be one string"#,
        ),
        (
            json!({"model": "m", "stream": "yes"}),
            r#""stream" must be a boolean"#,
        ),
        (
            json!({"model": "m", "stream_options": 1}),
            r#""stream_options" must be an object"#,
        ),
        (
            json!({"model": "m", "stream_options": {"include_usage": "y"}}),
            r#""stream_options.include_usage" must be a boolean"#,
        ),
        (
            json!({"model": "m", "max_tokens": 1.5}),
            r#""max_tokens" must be an integer"#,
        ),
        (
            json!({"model": "m", "max_tokens": "5"}),
            r#""max_tokens" must be an integer"#,
        ),
        (
            json!({"model": "m", "temperature": "hot"}),
            r#""temperature" must be a number"#,
        ),
        (
            json!({"model": "m", "top_p": true}),
            r#""top_p" must be a number"#,
        ),
        (
            json!({"model": "m", "seed": 1.5}),
            r#""seed" must be an integer"#,
        ),
        (
            json!({"model": "m", "frequency_penalty": "x"}),
            r#""frequency_penalty" must be a number"#,
        ),
        (
            json!({"model": "m", "stop": 5}),
            r#""stop" must be a string or an array of strings"#,
        ),
        (
            json!({"model": "m", "stop": ["a", 1]}),
            r#""stop" must be a string or an array of strings"#,
        ),
        (
            json!({"model": "m", "suffix": 3}),
            r#""suffix" must be a string"#,
        ),
        (
            json!({"model": "m", "echo": "yes"}),
            r#""echo" must be a boolean"#,
        ),
    ];
    for (body, want) in cases {
        let e = translate(&body).expect_err(&body.to_string());
        assert_eq!(e.to_error().status(), 400);
        assert!(e.to_string().contains(want), "{body}: {e}");
    }
}

fn gen(text: &str) -> String {
    json!({"model": "qwen2.5:7b", "created_at": "2026-11-20T10:00:00Z", "response": text, "done": false})
        .to_string()
}

fn last(text: &str, reason: &str) -> String {
    json!({"model": "qwen2.5:7b", "created_at": "2026-11-20T10:00:00Z", "response": text,
           "done": true, "done_reason": reason, "context": [1, 2, 3],
           "prompt_eval_count": 26, "eval_count": 9})
    .to_string()
}

/// Feeds `lines` as one NDJSON body cut at `split`, then ends it; returns the events.
fn run(lines: &[String], usage: bool, echo: Option<&str>, split: Option<usize>) -> Vec<Value> {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    stream_bytes(body.as_bytes(), usage, echo, split)
}

fn stream_bytes(body: &[u8], usage: bool, echo: Option<&str>, split: Option<usize>) -> Vec<Value> {
    let mut s = CompletionStream::new(meta(), usage, echo.map(str::to_owned));
    let mut splitter = LineSplitter::new(1 << 20);
    let mut out = Vec::new();
    let cut = split.unwrap_or(body.len()).min(body.len());
    for part in [&body[..cut], &body[cut..]] {
        splitter
            .feed(part, |l| out.extend(s.line(l)))
            .expect("short lines");
    }
    if let Some(l) = splitter.finish() {
        out.extend(s.line(&l));
    }
    out.extend(s.finish());
    events(&out)
}

/// Parses SSE bytes into events (`[DONE]` as a string value).
fn events(bytes: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(bytes).expect("utf-8");
    assert!(text.is_empty() || text.ends_with("\n\n"), "{text:?}");
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e.strip_prefix("data: ").expect("data event");
            if data == "[DONE]" {
                json!("[DONE]")
            } else {
                serde_json::from_str(data).expect("json event")
            }
        })
        .collect()
}

/// Text and finish reason of a chunk, or its usage, or the event itself.
fn brief(e: &Value) -> Value {
    if e == "[DONE]" || e.get("error").is_some() {
        return e.clone();
    }
    if let Some(u) = e.get("usage") {
        assert_eq!(e["choices"], json!([]), "{e}");
        return json!({"usage": u});
    }
    let c = &e["choices"][0];
    json!([c["text"], c["finish_reason"]])
}

#[test]
fn a_stream_as_openai_writes_it() {
    let lines = [gen("Once"), gen(" upon"), gen(""), last("", "stop")];
    let got = run(&lines, true, None, None);
    // Every chunk has Ollama's CompleteChunk shape, with OpenAI's null logprobs.
    assert_eq!(
        got[0],
        json!({"id": "cmpl-r1", "object": "text_completion", "created": 1_795_000_000u64,
               "model": "qwen2.5:7b", "system_fingerprint": "fp_ollama",
               "choices": [{"text": "Once", "index": 0, "logprobs": null, "finish_reason": null}]})
    );
    let briefs: Vec<Value> = got.iter().map(brief).collect();
    assert_eq!(
        briefs,
        [
            json!(["Once", null]),
            json!([" upon", null]),
            // The empty intermediate chunk gives no event.
            json!(["", "stop"]),
            json!({"usage": {"prompt_tokens": 26, "completion_tokens": 9, "total_tokens": 35}}),
            json!("[DONE]"),
        ]
    );
    assert_eq!(got[3]["object"], "text_completion");
    assert_eq!(got[3]["id"], "cmpl-r1");
    // Without include_usage: no usage anywhere.
    let got = run(&lines, false, None, None);
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|e| e.get("usage").is_none()), "{got:?}");
}

#[test]
fn streams_split_anywhere_read_the_same() {
    let lines = [gen("a\u{e9}b"), gen(" \"quoted\""), last(" end", "length")];
    let whole = run(&lines, true, Some("P: "), None);
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    for cut in 0..=body.len() {
        assert_eq!(
            run(&lines, true, Some("P: "), Some(cut)),
            whole,
            "cut at {cut}"
        );
    }
    let briefs: Vec<Value> = whole.iter().map(brief).collect();
    assert_eq!(briefs[0], json!(["P: a\u{e9}b", null]), "echo comes first");
    assert_eq!(briefs[2], json!([" end", "length"]));
    assert_eq!(whole.len(), 5);
}

#[test]
fn finish_reasons_and_odd_answers() {
    // Ollama's answer to an empty prompt: one object, no newline, done_reason "load".
    let load = br#"{"model":"m","created_at":"2026-11-20T10:00:00Z","response":"","done":true,"done_reason":"load"}"#;
    let got = stream_bytes(load, false, None, None);
    assert_eq!(
        got.iter().map(brief).collect::<Vec<_>>(),
        [json!(["", "stop"]), json!("[DONE]")]
    );
    // Echo with an answer that is only its final chunk.
    let got = run(&[last("", "stop")], false, Some("echo me"), None);
    assert_eq!(brief(&got[0]), json!(["echo me", "stop"]));
    for (reason, want) in [("stop", "stop"), ("length", "length"), ("unload", "stop")] {
        let got = run(&[last("x", reason)], false, None, None);
        assert_eq!(brief(&got[0]), json!(["x", want]), "{reason}");
    }
    // Lines after the final chunk are not read.
    let got = run(
        &[last("", "stop"), gen("late"), "{not json".into()],
        false,
        None,
        None,
    );
    assert_eq!(got.len(), 2);
}

#[test]
fn failures_end_with_one_error_event() {
    let err = json!({"error": "an error was encountered while running the model: unexpected EOF"});
    let got = run(&[gen("a"), err.to_string(), gen("b")], true, None, None);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        got[1],
        json!({"error": {"message": "an error was encountered while running the model: unexpected EOF",
                         "type": "api_error", "param": null, "code": null}})
    );
    // Ollama's answer ends before its final chunk.
    let got = run(&[gen("a")], false, None, None);
    assert_eq!(got.len(), 2);
    let msg = got[1]["error"]["message"].as_str().expect("message");
    assert!(
        msg.starts_with("ollama-bridge: ") && msg.contains("ended before its final chunk"),
        "{msg}"
    );
    // A line that is not JSON.
    let got = run(
        &[gen("a"), "{nope".into(), last("", "stop")],
        false,
        None,
        None,
    );
    assert_eq!(got.len(), 2);
    assert!(got[1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not JSON"));
    // The relay's failure (idle, broken upstream) mid-stream, and after the end.
    let mut s = CompletionStream::new(meta(), false, None);
    s.line(gen("a").as_bytes());
    let e = BridgeError::new(Reason::UpstreamTimeout, "Ollama sent nothing");
    let out = events(&s.fail(&e));
    assert_eq!(
        out[0]["error"]["message"],
        "ollama-bridge: Ollama sent nothing"
    );
    assert!(s.failed() && !s.is_done());
    assert!(s.line(last("", "stop").as_bytes()).is_empty());
    let mut s = CompletionStream::new(meta(), false, None);
    s.line(last("", "stop").as_bytes());
    assert!(s.is_done());
    assert!(s.fail(&e).is_empty() && s.finish().is_empty());
}

fn collect(lines: &[String], echo: Option<&str>) -> Result<Value, CollectError> {
    let mut c = CompletionCollector::new(meta(), echo.map(str::to_owned));
    for l in lines {
        c.line(l.as_bytes());
    }
    c.finish()
}

#[test]
fn gathered_answers() {
    let got = collect(
        &[gen("Once"), gen(" upon"), last(" a time", "length")],
        None,
    )
    .expect("ok");
    assert_eq!(
        got,
        json!({"id": "cmpl-r1", "object": "text_completion", "created": 1_795_000_000u64,
               "model": "qwen2.5:7b", "system_fingerprint": "fp_ollama",
               "choices": [{"text": "Once upon a time", "index": 0, "logprobs": null,
                            "finish_reason": "length"}],
               "usage": {"prompt_tokens": 26, "completion_tokens": 9, "total_tokens": 35}})
    );
    let got = collect(&[last("All of it", "stop")], Some("Q: ")).expect("ok");
    assert_eq!(got["choices"][0]["text"], "Q: All of it");
    assert_eq!(got["choices"][0]["finish_reason"], "stop");
    let table: Vec<(Vec<String>, CollectError)> = vec![
        (vec![gen("a")], CollectError::Incomplete),
        (vec![], CollectError::Incomplete),
        (
            vec![
                gen("a"),
                json!({"error": "boom"}).to_string(),
                last("", "stop"),
            ],
            CollectError::Ollama("boom".into()),
        ),
    ];
    for (lines, want) in table {
        assert_eq!(collect(&lines, None).expect_err("fails"), want, "{lines:?}");
    }
    assert!(matches!(
        collect(&["{nope".into(), last("", "stop")], None),
        Err(CollectError::NotJson(_))
    ));
}
