//! Token counts from NDJSON, SSE and whole objects, however they are formatted and split.

use super::*;

#[test]
fn ndjson_final_chunk_split_anywhere() {
    let body = b"{\"message\":{\"content\":\"\\\"eval_count\\\":999\"},\"done\":false}\n{\"message\":{\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":26,\"prompt_eval_duration\":3,\"eval_count\":290,\"eval_duration\":4}\n";
    for split in 0..body.len() {
        let mut s = TokenScanner::new();
        s.feed(&body[..split]);
        s.feed(&body[split..]);
        assert_eq!(
            s.finish(),
            Tokens {
                prompt: Some(26),
                completion: Some(290)
            },
            "split at {split}"
        );
    }
}

#[test]
fn non_streamed_object_without_newline() {
    let mut s = TokenScanner::new();
    s.feed(br#"{"response":"x","done":true,"prompt_eval_count":5,"eval_count":7}"#);
    assert_eq!(
        s.finish(),
        Tokens {
            prompt: Some(5),
            completion: Some(7)
        }
    );
}

#[test]
fn openai_usage() {
    let mut s = TokenScanner::new();
    s.feed(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":3,\"total_tokens\":14}}\n\ndata: [DONE]\n\n");
    assert_eq!(
        s.finish(),
        Tokens {
            prompt: Some(11),
            completion: Some(3)
        }
    );
}

#[test]
fn error_lines_are_noticed_wherever_the_split() {
    let body = b"{\"message\":{\"content\":\"{\\\"error\\\":1}\"},\"done\":false}\n{\"error\":\"unexpected EOF\"}\n";
    for split in 0..body.len() {
        let mut s = TokenScanner::new();
        s.feed(&body[..split]);
        assert!(!s.saw_error() || split == body.len(), "early at {split}");
        s.feed(&body[split..]);
        s.finish();
        assert!(s.saw_error(), "split at {split}");
    }
    let mut s = TokenScanner::new();
    s.feed(b"data: {\"error\":{\"message\":\"x\"}}\n\n");
    s.finish();
    assert!(s.saw_error());
    let mut s = TokenScanner::new();
    s.feed(b"{\"model\":\"m\",\"message\":{\"content\":\"{\\\"error\\\"\"},\"done\":true}\n");
    s.finish();
    assert!(!s.saw_error(), "text inside a chunk is not an error line");
}

#[test]
fn intermediate_chunks_do_not_count() {
    let mut s = TokenScanner::new();
    s.feed(b"{\"done\":false,\"prompt_eval_count\":1}\n");
    assert_eq!(s.finish(), Tokens::default());
}

/// The counts of `body` fed in two frames split at every byte, and the error flag.
fn each_split(body: &[u8]) -> Vec<(Tokens, bool)> {
    (0..=body.len())
        .map(|split| {
            let mut s = TokenScanner::new();
            s.feed(&body[..split]);
            s.feed(&body[split..]);
            (s.finish(), s.saw_error())
        })
        .collect()
}

fn counts(prompt: u64, completion: u64) -> Tokens {
    Tokens {
        prompt: Some(prompt),
        completion: Some(completion),
    }
}

#[test]
fn whitespace_inside_a_line_does_not_matter() {
    for body in [
        &b"{\"done\": false}\n{\"message\": {\"content\": \"\"}, \"done\": true, \"prompt_eval_count\": 26, \"eval_count\": 290}\n"[..],
        b"{ \"done\" :\ttrue , \"prompt_eval_count\" : 26 , \"eval_count\" :290 }\n",
        b"{\"done\":false}\r\n{\"done\":true,\"prompt_eval_count\":26,\"eval_count\":290}\r\n",
        // The counts before `done`, and a last line without a newline.
        b"{\"prompt_eval_count\":26,\"eval_count\":290,\"done\":true}",
        b"\n\n{\"done\":true,\"prompt_eval_count\":26,\"eval_count\":290}\n\n",
    ] {
        for (i, got) in each_split(body).into_iter().enumerate() {
            assert_eq!(got, (counts(26, 290), false), "{body:?} split at {i}");
        }
    }
}

#[test]
fn openai_usage_however_formatted() {
    for body in [
        &b"data: {\"choices\": [], \"usage\": {\"prompt_tokens\": 11, \"completion_tokens\": 3, \"total_tokens\": 14}}\n\ndata: [DONE]\n\n"[..],
        b"data:{\"choices\":[],\"usage\" : { \"prompt_tokens\" : 11 , \"completion_tokens\" : 3 }}\r\n\r\ndata: [DONE]\r\n\r\n",
        b": keep-alive\n\nevent: message\ndata: {\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":3}}\n\n",
        // A non-streamed answer on one line.
        b"{\"id\": \"chatcmpl-1\", \"choices\": [{\"message\": {\"content\": \"hi\"}}], \"usage\": {\"prompt_tokens\": 11, \"completion_tokens\": 3}}",
    ] {
        for (i, got) in each_split(body).into_iter().enumerate() {
            assert_eq!(got, (counts(11, 3), false), "{body:?} split at {i}");
        }
    }
}

#[test]
fn pretty_printed_answers_are_read_whole() {
    let native = br#"{
  "model": "qwen2.5:7b",
  "message": {
    "role": "assistant",
    "content": "{\"done\": true, \"eval_count\": 999}"
  },
  "done": true,
  "done_reason": "stop",
  "prompt_eval_count": 26,
  "eval_count": 290
}
"#;
    let openai = b"\n{\n    \"id\": \"chatcmpl-1\",\n    \"choices\": [],\n    \"usage\": {\n        \"prompt_tokens\": 11,\n        \"completion_tokens\": 3\n    }\n}";
    for (body, want) in [(&native[..], counts(26, 290)), (openai, counts(11, 3))] {
        for (i, got) in each_split(body).into_iter().enumerate() {
            assert_eq!(got, (want, false), "split at {i}");
        }
    }
    let error = b"{\n  \"error\": \"model requires more system memory\"\n}\n";
    assert!(each_split(error)
        .iter()
        .all(|&(t, e)| e && t == Tokens::default()));
}

#[test]
fn text_and_nested_objects_cannot_spoof_counts() {
    for body in [
        // Inside the message text.
        &b"{\"message\":{\"content\":\"\\\"done\\\": true, \\\"eval_count\\\": 5\"},\"done\":false}\n"[..],
        // A nested object with the keys, in tool call arguments.
        b"{\"message\":{\"tool_calls\":[{\"function\":{\"arguments\":{\"done\": true,\"prompt_eval_count\":5,\"eval_count\":5}}}]},\"done\":false}\n",
        // A nested usage object.
        b"data: {\"choices\":[{\"delta\":{\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":5}}}]}\n\n",
        // `done` that is not the boolean true.
        b"{\"done\":\"true\",\"prompt_eval_count\":5,\"eval_count\":5}\n",
        // Not JSON at all.
        b"{\"done\": true, \"prompt_eval_count\": 5, \"eval_count\": 5\n",
    ] {
        for (i, got) in each_split(body).into_iter().enumerate() {
            assert_eq!(got, (Tokens::default(), false), "{body:?} split at {i}");
        }
    }
}

#[test]
fn error_objects_however_formatted() {
    for body in [
        &b"{\"done\":false}\n{ \"error\" : \"unexpected EOF\" }\n"[..],
        b"data: { \"error\": { \"message\": \"x\" } }\n\n",
        b"{\"model\":\"m\",\"error\":\"x\"}",
    ] {
        for (i, (_, error)) in each_split(body).into_iter().enumerate() {
            assert!(error, "{body:?} split at {i}");
        }
    }
    for body in [
        &b"{\"error\":null,\"done\":true}\n"[..],
        b"{\"message\":{\"content\":\"error: 1\"},\"done\":false}\n",
        b"{\"message\":{\"tool_calls\":[{\"function\":{\"arguments\":{\"error\":\"x\"}}}]}}\n",
    ] {
        assert!(each_split(body).iter().all(|&(_, e)| !e), "{body:?}");
    }
}

#[test]
fn only_lines_that_can_count_are_parsed() {
    assert!(has_key(br#"{"done": true}"#, b"\"done\"", b"true"));
    assert!(has_key(b"{\"done\"\t:\r\ntrue}", b"\"done\"", b"true"));
    assert!(!has_key(br#"{"done": false}"#, b"\"done\"", b"true"));
    assert!(!has_key(
        br#"{"x": "done", "y": true}"#,
        b"\"done\"",
        b"true"
    ));
    assert!(has_key(
        br#"{"usage" : {"prompt_tokens": 1}}"#,
        b"\"usage\"",
        b"{"
    ));
    assert!(!has_key(br#"{"usage": null}"#, b"\"usage\"", b"{"));
    assert!(has_key(br#"{"a": 1, "error" :"x"}"#, b"\"error\"", b""));
    assert!(!has_key(br#"{"content": "error"}"#, b"\"error\"", b""));
    // A non-key occurrence first, then the key; quotes next to each other; the key at
    // the very end.
    assert!(has_key(
        br#"{"content": "done", "done": true}"#,
        b"\"done\"",
        b"true"
    ));
    assert!(has_key(br#"{"a":"","done":true}"#, b"\"done\"", b"true"));
    assert!(!has_key(br#"{"a": "done""#, b"\"done\"", b"true"));
    assert!(!has_key(b"", b"\"done\"", b"true"));
}

#[test]
fn an_overlong_line_is_skipped_and_the_next_still_counts() {
    let mut s = TokenScanner::new();
    s.feed(b"{\"done\":true,\"message\":{\"content\":\"");
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..17 {
        s.feed(&chunk);
    }
    s.feed(b"\"},\"prompt_eval_count\":1,\"eval_count\":1}\n");
    assert_eq!(s.tokens(), Tokens::default());
    s.feed(b"{\"done\": true, \"prompt_eval_count\": 26, \"eval_count\": 290}\n");
    assert_eq!(s.finish(), counts(26, 290));
    assert!(s.line.capacity() <= MAX_LINE);
}

#[test]
fn chunks_are_the_non_blank_lines_however_split() {
    let body =
        b"{\"response\":\"a\",\"done\":false}\n\n{\"response\":\"b\",\"done\":false}\r\n{\"resp";
    for split in 0..body.len() {
        let mut s = TokenScanner::new();
        s.feed(&body[..split]);
        s.feed(&body[split..]);
        assert_eq!(s.chunks(), 2, "split at {split}");
        s.finish();
        assert_eq!(s.chunks(), 3, "the cut last line counts at the end");
    }
    let mut sse = TokenScanner::new();
    sse.feed(b"data: {\"x\":1}\n\ndata: {\"x\":2}\n\n");
    assert_eq!(sse.chunks(), 2);
}

#[test]
fn an_embed_answer_gives_its_prompt_count_and_a_chunk_never_does() {
    let mut s = TokenScanner::new();
    s.feed(br#"{"model":"m","embeddings":[[0.1,0.2]],"total_duration":1,"prompt_eval_count":8}"#);
    assert_eq!(
        s.finish(),
        Tokens {
            prompt: Some(8),
            completion: None
        }
    );
    // Not an embed answer (no `embeddings`), not a final chunk: no count.
    let mut s = TokenScanner::new();
    s.feed(b"{\"message\":{\"content\":\"x\"},\"done\":false,\"prompt_eval_count\":5}\n");
    s.feed(b"{\"response\":\"x\",\"prompt_eval_count\":5}\n");
    assert_eq!(s.finish(), Tokens::default());
}
