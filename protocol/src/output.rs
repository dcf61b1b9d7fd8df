//! Assembles the assistant's text from an answer as it streams past, for audit records
//! with `log_prompts = true` only (it parses every line, which the token scanner avoids).
//! Understands Ollama's NDJSON chunks and whole objects (`message.content`, `response`)
//! and OpenAI's SSE chunks and objects (`choices[].delta.content`, `.message.content`,
//! `.text`). Keeps at most `limit` bytes of text and says when it cut.

use serde_json::Value;

/// Longest line buffered for parsing; a longer line is not read (and marks truncation).
const MAX_LINE: usize = 16 << 20;

/// Incremental collector of assistant text.
#[derive(Debug)]
pub struct OutputCollector {
    limit: usize,
    line: Vec<u8>,
    overlong: bool,
    text: String,
    truncated: bool,
}

impl OutputCollector {
    /// A collector keeping at most `limit` bytes of text.
    pub fn new(limit: usize) -> Self {
        OutputCollector {
            limit,
            line: Vec::new(),
            overlong: false,
            text: String::new(),
            truncated: false,
        }
    }

    /// Feeds the next bytes of the body.
    pub fn feed(&mut self, mut data: &[u8]) {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            self.push(&data[..nl]);
            self.end_line();
            data = &data[nl + 1..];
        }
        self.push(data);
    }

    /// Ends the body: the text (at most `limit` bytes) and whether more was cut off.
    pub fn finish(mut self) -> (String, bool) {
        self.end_line();
        (self.text, self.truncated)
    }

    fn push(&mut self, part: &[u8]) {
        if self.truncated || self.overlong {
            return;
        }
        if self.line.len() + part.len() > MAX_LINE {
            self.overlong = true;
            self.line = Vec::new();
            return;
        }
        self.line.extend_from_slice(part);
    }

    fn end_line(&mut self) {
        if std::mem::take(&mut self.overlong) {
            self.truncated = true;
        }
        let line = std::mem::take(&mut self.line);
        if self.truncated {
            return;
        }
        let t = line.trim_ascii();
        let t = t.strip_prefix(b"data:").map_or(t, <[u8]>::trim_ascii_start);
        if t.first() != Some(&b'{') {
            return;
        }
        if let Ok(v) = serde_json::from_slice::<Value>(t) {
            for piece in pieces(&v) {
                self.append(piece);
            }
        }
        // Reuse the allocation for the next line.
        self.line = line;
        self.line.clear();
    }

    fn append(&mut self, s: &str) {
        let room = self.limit - self.text.len();
        if s.len() <= room {
            self.text.push_str(s);
            return;
        }
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.text.push_str(&s[..cut]);
        self.truncated = true;
    }
}

/// The text pieces of one chunk or object.
fn pieces(v: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    if let Some(s) = v.pointer("/message/content").and_then(Value::as_str) {
        out.push(s);
    }
    if let Some(s) = v.get("response").and_then(Value::as_str) {
        out.push(s);
    }
    if let Some(choices) = v.get("choices").and_then(Value::as_array) {
        for c in choices {
            for p in ["/delta/content", "/message/content", "/text"] {
                if let Some(s) = c.pointer(p).and_then(Value::as_str) {
                    out.push(s);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(limit: usize, body: &[u8], split: usize) -> (String, bool) {
        let mut c = OutputCollector::new(limit);
        c.feed(&body[..split]);
        c.feed(&body[split..]);
        c.finish()
    }

    #[test]
    fn ndjson_chat_split_anywhere() {
        let body = b"{\"message\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"done\":false}\n{\"message\":{\"content\":\"lo \\u00e9\"},\"done\":false}\n{\"message\":{\"content\":\"\"},\"done\":true,\"eval_count\":2}\n";
        for split in 0..body.len() {
            assert_eq!(
                collect(1024, body, split),
                ("Hello \u{e9}".into(), false),
                "{split}"
            );
        }
    }

    #[test]
    fn generate_and_whole_objects() {
        let body = br#"{"response":"one ","done":false}
{"response":"two","done":true}"#;
        assert_eq!(collect(100, body, 3), ("one two".into(), false));
        let whole =
            br#"{"model":"m","message":{"role":"assistant","content":"all at once"},"done":true}"#;
        assert_eq!(collect(100, whole, 0), ("all at once".into(), false));
    }

    #[test]
    fn openai_sse_and_objects() {
        let sse = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"}}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"},\"finish_reason\":null}]}\n\ndata: [DONE]\n\n";
        assert_eq!(collect(100, sse, 10), ("Hi there".into(), false));
        let obj = br#"{"choices":[{"message":{"role":"assistant","content":"done"}}]}"#;
        assert_eq!(collect(100, obj, 5), ("done".into(), false));
    }

    #[test]
    fn bounded_on_a_char_boundary() {
        let body = "{\"response\":\"ab\u{e9}cd\"}\n{\"response\":\"more\"}\n".as_bytes();
        // 'é' is two bytes: a limit of 3 cannot keep half of it.
        assert_eq!(collect(3, body, 0), ("ab".into(), true));
        assert_eq!(collect(4, body, 0), ("ab\u{e9}".into(), true));
        assert_eq!(collect(10, body, 0), ("ab\u{e9}cdmore".into(), false));
        assert_eq!(collect(9, body, 0), ("ab\u{e9}cdmor".into(), true));
    }

    #[test]
    fn non_json_is_ignored() {
        assert_eq!(collect(10, b"Ollama is running", 4), (String::new(), false));
    }
}
