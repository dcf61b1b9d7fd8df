//! Table-driven tests of the NDJSON → SSE translator and the line splitter.

use serde_json::{json, Value};

use super::*;
use crate::openai::call_id;

fn meta() -> Meta {
    Meta {
        id: "chatcmpl-t".into(),
        created: 1_795_000_000,
        model: "qwen2.5:7b".into(),
        seed: 3,
    }
}

const C1: &str = r#"{"id":"call_k3j9x0aa","function":{"index":0,"name":"get_weather","arguments":{"city":"Paris"}}}"#;
const C2: &str =
    r#"{"id":"call_p0q1r2s3","function":{"index":1,"name":"get_time","arguments":{"tz":"UTC"}}}"#;

fn text(t: &str) -> String {
    format!(
        r#"{{"model":"qwen2.5:7b","message":{{"role":"assistant","content":"{t}"}},"done":false}}"#
    )
}

fn calls(list: &[&str], done: bool) -> String {
    let tail = if done {
        r#""done":true,"done_reason":"stop","prompt_eval_count":26,"eval_count":9"#
    } else {
        r#""done":false"#
    };
    format!(
        r#"{{"model":"qwen2.5:7b","message":{{"role":"assistant","content":"","tool_calls":[{}]}},{tail}}}"#,
        list.join(",")
    )
}

fn last(reason: &str) -> String {
    format!(
        r#"{{"model":"qwen2.5:7b","message":{{"role":"assistant","content":""}},"done":true,"done_reason":"{reason}","prompt_eval_count":26,"eval_count":9}}"#
    )
}

/// Feeds `lines` as one NDJSON body cut at `split`, then ends it; returns the events.
fn run(lines: &[String], usage: bool, split: Option<usize>) -> Vec<Value> {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut s = ChatStream::new(meta(), usage);
    let mut splitter = LineSplitter::new(1 << 20);
    let mut out = Vec::new();
    let cut = split.unwrap_or(body.len()).min(body.len());
    for part in [&body.as_bytes()[..cut], &body.as_bytes()[cut..]] {
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

/// A short summary of an event: its delta, finish reason, usage or error.
fn brief(e: &Value) -> Value {
    if e == "[DONE]" || e.get("error").is_some() {
        return e.clone();
    }
    if let Some(u) = e.get("usage") {
        return json!({"usage": u});
    }
    let c = &e["choices"][0];
    json!({"delta": c["delta"], "finish": c["finish_reason"]})
}

fn call(index: usize, id: &str, name: &str, args: &str) -> Value {
    json!({"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": args}})
}

#[test]
fn tool_calls_wherever_they_arrive() {
    let weather = call(0, "call_k3j9x0aa", "get_weather", r#"{"city":"Paris"}"#);
    let time = call(1, "call_p0q1r2s3", "get_time", r#"{"tz":"UTC"}"#);
    let lets = json!({"delta": {"role": "assistant", "content": "Let "}, "finish": null});
    let me = json!({"delta": {"content": "me."}, "finish": null});
    let both = json!({"delta": {"tool_calls": [weather, time]}, "finish": null});
    let fin = json!({"delta": {}, "finish": "tool_calls"});
    let done = json!("[DONE]");
    let cases: Vec<(&str, Vec<String>, Vec<Value>)> = vec![
        (
            "intermediate",
            vec![
                text("Let "),
                text("me."),
                calls(&[C1, C2], false),
                last("stop"),
            ],
            vec![
                lets.clone(),
                me.clone(),
                both.clone(),
                fin.clone(),
                done.clone(),
            ],
        ),
        (
            "final",
            vec![text("Let "), text("me."), calls(&[C1, C2], true)],
            vec![
                lets.clone(),
                me.clone(),
                both.clone(),
                fin.clone(),
                done.clone(),
            ],
        ),
        (
            "split",
            vec![
                text("Let "),
                calls(&[C1], false),
                calls(&[C2], false),
                last("stop"),
            ],
            vec![
                lets.clone(),
                json!({"delta": {"tool_calls": [weather.clone()]}, "finish": null}),
                json!({"delta": {"tool_calls": [time.clone()]}, "finish": null}),
                fin.clone(),
                done.clone(),
            ],
        ),
        (
            "intermediate and final, repeated call skipped",
            vec![calls(&[C1], false), calls(&[C1, C2], true)],
            vec![
                json!({"delta": {"role": "assistant", "tool_calls": [weather.clone()]}, "finish": null}),
                json!({"delta": {"tool_calls": [time.clone()]}, "finish": null}),
                fin.clone(),
                done.clone(),
            ],
        ),
        (
            "no ids from Ollama",
            vec![calls(
                &[
                    r#"{"function":{"index":0,"name":"a","arguments":{}}}"#,
                    r#"{"function":{"index":0,"name":"b"}}"#,
                ],
                true,
            )],
            vec![
                json!({"delta": {"role": "assistant", "tool_calls": [call(0, &call_id(3, 0), "a", "{}"), call(1, &call_id(3, 1), "b", "{}")]}, "finish": null}),
                fin.clone(),
                done.clone(),
            ],
        ),
        (
            "plain text",
            vec![text("Hi"), last("stop")],
            vec![
                json!({"delta": {"role": "assistant", "content": "Hi"}, "finish": null}),
                json!({"delta": {}, "finish": "stop"}),
                done.clone(),
            ],
        ),
        (
            "cut by num_predict, nothing said",
            vec![last("length")],
            vec![
                json!({"delta": {"role": "assistant", "content": ""}, "finish": null}),
                json!({"delta": {}, "finish": "length"}),
                done.clone(),
            ],
        ),
    ];
    for (name, lines, want) in cases {
        let body_len: usize = lines.iter().map(|l| l.len() + 1).sum();
        // Every cut of the byte stream gives the same events.
        for split in 0..=body_len {
            let got: Vec<Value> = run(&lines, false, Some(split)).iter().map(brief).collect();
            assert_eq!(got, want, "{name}, split at {split}");
        }
    }
}

#[test]
fn usage_chunk_and_exact_wire_format() {
    let mut s = ChatStream::new(meta(), true);
    let mut out = s.line(text("Hi").as_bytes());
    out.extend(s.line(last("stop").as_bytes()));
    out.extend(s.finish());
    let want = concat!(
        r#"data: {"id":"chatcmpl-t","object":"chat.completion.chunk","created":1795000000,"model":"qwen2.5:7b","system_fingerprint":"fp_ollama","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-t","object":"chat.completion.chunk","created":1795000000,"model":"qwen2.5:7b","system_fingerprint":"fp_ollama","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-t","object":"chat.completion.chunk","created":1795000000,"model":"qwen2.5:7b","system_fingerprint":"fp_ollama","choices":[],"usage":{"prompt_tokens":26,"completion_tokens":9,"total_tokens":35}}"#,
        "\n\n",
        "data: [DONE]\n\n",
    );
    assert_eq!(String::from_utf8(out).expect("utf-8"), want);
    assert!(s.is_done() && !s.failed());
}

#[test]
fn errors_end_the_stream_with_one_event() {
    let ollama_err =
        r#"{"error":"an error was encountered while running the model: unexpected EOF"}"#;
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "error line",
            vec![text("Hi"), ollama_err.into(), text("more"), last("stop")],
            "unexpected EOF",
        ),
        (
            "no final chunk",
            vec![text("Hi")],
            "ended before its final chunk",
        ),
        (
            "not JSON",
            vec![text("Hi"), "{\"message\":".into(), last("stop")],
            "not JSON",
        ),
    ];
    for (name, lines, want) in cases {
        let got = run(&lines, true, None);
        assert_eq!(got.len(), 2, "{name}: {got:?}");
        assert_eq!(got[0]["choices"][0]["delta"]["content"], "Hi", "{name}");
        let err = &got[1]["error"];
        assert!(
            err["message"].as_str().expect("message").contains(want),
            "{name}: {err}"
        );
        assert_eq!(err["type"], "api_error", "{name}");
    }
}

#[test]
fn bridge_failures_after_the_end_are_silent() {
    let idle = BridgeError::new(Reason::UpstreamTimeout, "Ollama sent nothing for 1s");
    let mut s = ChatStream::new(meta(), false);
    s.line(text("Hi").as_bytes());
    let e = events(&s.fail(&idle));
    assert_eq!(
        e[0]["error"]["message"],
        "ollama-bridge: Ollama sent nothing for 1s"
    );
    assert_eq!(e[0]["error"]["code"], "upstream_timeout");
    assert!(s.failed());
    assert!(s.fail(&idle).is_empty() && s.finish().is_empty());
    assert!(s.line(last("stop").as_bytes()).is_empty());

    let mut s = ChatStream::new(meta(), false);
    s.line(last("stop").as_bytes());
    assert!(s.is_done());
    assert!(s.fail(&idle).is_empty());
}

#[test]
fn line_splitter() {
    let body = b"{\"a\":1}\r\n\n{\"b\":2}\n{\"c\":3}";
    for split in 0..=body.len() {
        let mut sp = LineSplitter::new(64);
        let mut lines: Vec<Vec<u8>> = Vec::new();
        sp.feed(&body[..split], |l| lines.push(l.to_vec()))
            .expect("short");
        sp.feed(&body[split..], |l| lines.push(l.to_vec()))
            .expect("short");
        lines.extend(sp.finish());
        assert_eq!(
            lines,
            [
                b"{\"a\":1}".to_vec(),
                Vec::new(),
                b"{\"b\":2}".to_vec(),
                b"{\"c\":3}".to_vec()
            ],
            "split at {split}"
        );
    }
    let mut sp = LineSplitter::new(4);
    assert_eq!(sp.feed(b"12345", |_| {}), Err(LineTooLong { max: 4 }));
    assert_eq!(sp.finish(), None, "the partial line is dropped");
    let mut sp = LineSplitter::new(4);
    sp.feed(b"12", |_| {}).expect("short");
    assert!(sp.feed(b"345\n", |_| {}).is_err());
    let mut sp = LineSplitter::new(4);
    sp.feed(b"  \n \n", |_| {}).expect("short");
    assert_eq!(sp.finish(), None);
    // Found by fuzz/ndjson_sse: a long line that came whole in one frame passed the limit.
    for frames in [&[&b"ok\n12345\n"[..]][..], &[b"ok\n12", b"345\n"]] {
        let mut sp = LineSplitter::new(4);
        let mut lines: Vec<Vec<u8>> = Vec::new();
        let errs: Vec<_> = frames
            .iter()
            .map(|f| sp.feed(f, |l| lines.push(l.to_vec())))
            .collect();
        assert_eq!(
            errs.last(),
            Some(&Err(LineTooLong { max: 4 })),
            "{frames:?}"
        );
        assert_eq!(lines, [b"ok".to_vec()], "{frames:?}");
    }
}

/// As Ollama's layer: a native chunk's `logprobs` go on the first event made from it, as
/// the choice's `logprobs.content`; events without any have none.
#[test]
fn logprobs_ride_on_the_first_event_of_their_chunk() {
    let lp = r#"[{"token":"Hi","logprob":-0.5,"bytes":[72,105],"top_logprobs":[{"token":"Hi","logprob":-0.5}]}]"#;
    let mixed = format!(
        r#"{{"message":{{"role":"assistant","content":"Hi","thinking":"hmm"}},"logprobs":{lp},"done":false}}"#
    );
    let got = run(&[mixed, text(" there"), last("stop")], false, None);
    let lps: Vec<Value> = got
        .iter()
        .filter(|e| e.is_object())
        .map(|e| {
            e["choices"][0]
                .get("logprobs")
                .cloned()
                .unwrap_or(Value::Null)
        })
        .collect();
    let want: Value = serde_json::from_str(lp).unwrap();
    assert_eq!(
        lps,
        vec![
            json!({ "content": want }),
            Value::Null,
            Value::Null,
            Value::Null
        ],
        "{got:?}"
    );
    assert_eq!(got[0]["choices"][0]["delta"]["reasoning"], "hmm");
    // An empty list is no logprobs.
    let empty = r#"{"message":{"role":"assistant","content":"a"},"logprobs":[],"done":false}"#;
    let got = run(&[empty.to_owned(), last("stop")], false, None);
    assert!(got[0]["choices"][0].get("logprobs").is_none(), "{got:?}");
}
