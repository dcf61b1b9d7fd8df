//! Ollama's NDJSON chat stream, cut into arbitrary frames, through the translator the
//! host runs for `openai_via_native` (`LineSplitter` + `ChatStream`, driven exactly as
//! bridge-host's `SseTransform`), and the same body through the non-streamed
//! `ChatCollector`.
//!
//! With flag bit 5 the body is read as Ollama's `/api/generate` stream instead, through
//! `CompletionStream` and `CompletionCollector` (legacy `/v1/completions`; bit 6 asks
//! for `echo`).
//!
//! Input: byte 0 = flags (bit 0 include_usage, bits 1-3 log2 of the largest random
//! frame, bit 4 end with an upstream failure instead of a clean end, bit 5 completions,
//! bit 6 echo), byte 1 = line limit (< 128: the host's 16 MiB, else 16..1032 bytes),
//! byte 2 = split seed, then the body.
//!
//! Properties: nothing panics; the output is well-formed SSE (`data: <line>\n\n`, each
//! data `[DONE]` or JSON); it is identical whether the body came in one frame, random
//! frames or byte by byte; it ends with exactly one `[DONE]` or one error event and
//! nothing after; `role` only in the first delta; tool calls are numbered 0..n without
//! gaps, with distinct ids, string arguments and `finish_reason: "tool_calls"`; the
//! usage chunk (when asked) sits just before `[DONE]`; and a completed stream says what
//! the non-streamed collector says (content, reasoning, calls, finish reason, usage).
//! Completions: the same framing, ending and usage properties; every chunk is a
//! `text_completion` with one choice; exactly one `finish_reason` (`stop` or `length`)
//! on a completed stream, on its last text chunk, none on a failed one; the echoed prompt
//! comes first; and a completed stream's text, finish reason and usage are the
//! collector's.
#![no_main]

use fuzz_support::{sse_events, Event, Rng};
use libfuzzer_sys::fuzz_target;
use protocol::error::{BridgeError, Reason};
use protocol::openai::{
    completion_meta, ChatCollector, ChatStream, CompletionCollector, CompletionStream,
    LineSplitter, Meta, SseStream,
};
use serde_json::{json, Value};

const HOST_MAX_LINE: usize = 16 << 20;

fn meta() -> Meta {
    Meta::new("req-fuzz", 1_795_000_000, "qwen2.5:7b")
}

const ECHO: &str = "ECHO \u{e9}: ";

/// The translator under test: chat, or (`completion`) legacy completions.
fn stream(usage: bool, completion: Option<bool>) -> Box<dyn SseStream> {
    match completion {
        None => Box::new(ChatStream::new(meta(), usage)),
        Some(echo) => Box::new(CompletionStream::new(
            completion_meta("req-fuzz", 1_795_000_000, "qwen2.5:7b"),
            usage,
            echo.then(|| ECHO.to_owned()),
        )),
    }
}

/// The host's `SseTransform`: feed frames until the stream is complete, then end it.
fn translate(
    frames: &[&[u8]],
    usage: bool,
    max_line: usize,
    fail_at_end: bool,
    completion: Option<bool>,
) -> Vec<u8> {
    let mut lines = LineSplitter::new(max_line);
    let mut stream = stream(usage, completion);
    let mut out = Vec::new();
    for f in frames {
        if stream.failed() || stream.is_done() {
            break;
        }
        let s = &mut stream;
        if let Err(e) = lines.feed(f, |l| out.extend(s.line(l))) {
            let err = BridgeError::new(Reason::UpstreamError, e.to_string());
            out.extend(stream.fail(&err));
        }
    }
    if fail_at_end {
        let err = BridgeError::new(Reason::UpstreamTimeout, "Ollama went silent");
        out.extend(stream.fail(&err));
    } else {
        if let Some(l) = lines.finish() {
            out.extend(stream.line(&l));
        }
        out.extend(stream.finish());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [flags, limit, seed, ref body @ ..] = *data else {
        return;
    };
    let usage = flags & 1 == 1;
    let max_frame = 1usize << ((flags >> 1) & 7);
    let fail_at_end = flags & 16 != 0;
    let completion = (flags & 32 != 0).then_some(flags & 64 != 0);
    let max_line = if limit < 128 {
        HOST_MAX_LINE
    } else {
        16 + usize::from(limit - 128) * 8
    };

    let whole = translate(&[body], usage, max_line, fail_at_end, completion);
    let random = Rng(u64::from(seed)).frames(body, max_frame);
    assert_eq!(
        translate(&random, usage, max_line, fail_at_end, completion),
        whole,
        "output depends on the framing"
    );
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(
        translate(&bytes, usage, max_line, fail_at_end, completion),
        whole,
        "output differs when fed byte by byte"
    );
    if let Some(echo) = completion {
        let collect = max_line == HOST_MAX_LINE && !fail_at_end;
        check_completion(&whole, body, usage, echo, collect);
        return;
    }

    let events = sse_events(&whole);
    let (last, rest) = events
        .split_last()
        .expect("a stream always ends with an event");
    let done = match last {
        Event::Done => true,
        Event::Json(v) => {
            assert!(
                v.get("error").is_some(),
                "stream ends without [DONE] or error: {v}"
            );
            false
        }
    };
    let mut first_delta = true;
    let mut calls = Vec::new();
    let mut finish = Vec::new();
    let (mut content, mut reasoning) = (String::new(), String::new());
    let mut usage_seen = None;
    for (i, ev) in rest.iter().enumerate() {
        let Event::Json(v) = ev else {
            panic!("[DONE] before the end")
        };
        assert!(v.get("error").is_none(), "error event before the end: {v}");
        assert_eq!(v["object"], "chat.completion.chunk");
        assert_eq!(v["id"], json!(meta().id));
        if let Some(u) = v.get("usage") {
            assert!(
                usage && done && i + 2 == events.len(),
                "usage chunk misplaced"
            );
            assert_eq!(v["choices"], json!([]));
            usage_seen = Some(u.clone());
            continue;
        }
        let choices = v["choices"].as_array().expect("choices");
        assert_eq!(choices.len(), 1);
        let delta = choices[0]["delta"].as_object().expect("delta");
        assert_eq!(delta.contains_key("role"), first_delta && !delta.is_empty());
        first_delta &= delta.is_empty();
        if let Some(r) = choices[0]["finish_reason"].as_str() {
            finish.push(r.to_owned());
        }
        content += delta.get("content").and_then(Value::as_str).unwrap_or("");
        reasoning += delta.get("reasoning").and_then(Value::as_str).unwrap_or("");
        for c in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            assert_eq!(c["index"], json!(calls.len()), "tool-call index gap: {c}");
            assert_eq!(c["type"], "function");
            assert!(c["function"]["arguments"].is_string(), "{c}");
            let id = c["id"].as_str().expect("call id");
            assert!(!id.is_empty());
            assert!(
                calls.iter().all(|p: &Value| p["id"] != id),
                "duplicate call id {id}"
            );
            calls.push(c.clone());
        }
    }
    if !done {
        assert!(finish.is_empty(), "finish_reason on a failed stream");
    } else {
        assert_eq!(finish.len(), 1, "finish_reason count");
        if !calls.is_empty() {
            assert_eq!(finish[0], "tool_calls");
        }
        assert_eq!(usage_seen.is_some(), usage);
    }

    // The same body, not streamed (only with the host's limit: the collector has none).
    if max_line != HOST_MAX_LINE || fail_at_end {
        return;
    }
    let mut collector = ChatCollector::new(meta());
    for line in body.split(|&b| b == b'\n') {
        collector.line(line);
    }
    let Ok(whole) = collector.finish() else {
        assert!(!done, "streamed [DONE] but not collected");
        return;
    };
    assert!(done, "collected but the stream failed");
    let choice = &whole["choices"][0];
    let message = &choice["message"];
    assert_eq!(message["content"], json!(content));
    let want_reasoning = (!reasoning.is_empty()).then(|| json!(reasoning));
    assert_eq!(message.get("reasoning"), want_reasoning.as_ref());
    let collected: Vec<Value> = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let streamed: Vec<Value> = calls
        .iter()
        .map(|c| json!({"id": c["id"], "type": "function", "function": c["function"]}))
        .collect();
    assert_eq!(collected, streamed, "tool calls differ");
    assert_eq!(choice["finish_reason"], json!(finish[0]));
    if let Some(u) = usage_seen {
        assert_eq!(whole["usage"], u);
    }
});

/// The properties of a translated completion stream (see the module's doc).
fn check_completion(out: &[u8], body: &[u8], usage: bool, echo: bool, collect: bool) {
    let meta = completion_meta("req-fuzz", 1_795_000_000, "qwen2.5:7b");
    let events = sse_events(out);
    let (last, rest) = events
        .split_last()
        .expect("a stream always ends with an event");
    let done = match last {
        Event::Done => true,
        Event::Json(v) => {
            assert!(
                v.get("error").is_some(),
                "stream ends without [DONE] or error: {v}"
            );
            false
        }
    };
    let mut text = String::new();
    let mut finish = Vec::new();
    let mut usage_seen = None;
    for (i, ev) in rest.iter().enumerate() {
        let Event::Json(v) = ev else {
            panic!("[DONE] before the end")
        };
        assert!(v.get("error").is_none(), "error event before the end: {v}");
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["id"], json!(meta.id));
        if let Some(u) = v.get("usage") {
            assert!(
                usage && done && i + 2 == events.len(),
                "usage chunk misplaced"
            );
            assert_eq!(v["choices"], json!([]));
            usage_seen = Some(u.clone());
            continue;
        }
        assert!(finish.is_empty(), "a chunk after the finish reason");
        let choices = v["choices"].as_array().expect("choices");
        assert_eq!(choices.len(), 1);
        let chunk = choices[0]["text"].as_str().expect("text");
        assert!(
            !chunk.is_empty() || !choices[0]["finish_reason"].is_null(),
            "empty chunk"
        );
        text += chunk;
        if let Some(r) = choices[0]["finish_reason"].as_str() {
            assert!(r == "stop" || r == "length", "{r}");
            finish.push(r.to_owned());
        }
    }
    if echo && !text.is_empty() {
        assert!(text.starts_with(ECHO), "the echo is not first: {text:?}");
    }
    if !done {
        assert!(finish.is_empty(), "finish_reason on a failed stream");
        return;
    }
    assert_eq!(finish.len(), 1, "finish_reason count");
    assert_eq!(usage_seen.is_some(), usage);
    if echo {
        assert!(text.starts_with(ECHO), "the echo is missing: {text:?}");
    }
    if !collect {
        return;
    }
    let mut collector = CompletionCollector::new(meta, echo.then(|| ECHO.to_owned()));
    for line in body.split(|&b| b == b'\n') {
        collector.line(line);
    }
    let whole = collector
        .finish()
        .expect("streamed [DONE] but not collected");
    assert_eq!(whole["choices"][0]["text"], json!(text));
    assert_eq!(whole["choices"][0]["finish_reason"], json!(finish[0]));
    if let Some(u) = usage_seen {
        assert_eq!(whole["usage"], u);
    }
}
