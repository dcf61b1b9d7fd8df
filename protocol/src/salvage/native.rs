//! Ollama's `/api/chat` answer (NDJSON chunks, or the one object of `"stream": false`)
//! with its content run through a [`Recogniser`]: chunks whose content passes go out as
//! they came (byte for byte when nothing changed), held content is left out of its
//! chunk, and the final chunk carries the salvaged calls as `message.tool_calls` in
//! Ollama's own shape (`{"id","function":{"index","name","arguments"}}`), or the held
//! text as content. A reply that carries calls of its own is left alone from there on.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::call::Call;
use super::recognise::Recogniser;
use super::tools::Tools;

/// One `/api/chat` answer through the salvage.
#[derive(Debug)]
pub struct ChatSalvage {
    rec: Recogniser,
    /// Ollama sent calls itself, or the final chunk went by: lines pass as they are.
    off: bool,
    /// Makes the calls' ids (with their index).
    seed: String,
    salvaged: usize,
    /// `model` and `created_at` of the last chunk, for a chunk the salvage writes itself.
    model: Value,
    created_at: Value,
}

impl ChatSalvage {
    /// `seed` (e.g. the request's id) makes the calls' ids.
    pub fn new(tools: Arc<Tools>, seed: &str) -> Self {
        ChatSalvage {
            rec: Recogniser::new(tools),
            off: false,
            seed: seed.to_owned(),
            salvaged: 0,
            model: Value::Null,
            created_at: Value::Null,
        }
    }

    /// How many calls were salvaged.
    pub fn salvaged(&self) -> usize {
        self.salvaged
    }

    /// One line of Ollama's answer (without its newline): the lines to send instead, each
    /// ending in `\n`, appended to `out`.
    pub fn line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        if self.off {
            return verbatim(line, out);
        }
        let Ok(mut chunk) = serde_json::from_slice::<Map<String, Value>>(line) else {
            return verbatim(line, out);
        };
        if let Some(m) = chunk.get("model") {
            self.model = m.clone();
        }
        if let Some(c) = chunk.get("created_at") {
            self.created_at = c.clone();
        }
        let done = chunk.get("done") == Some(&Value::Bool(true));
        let Some(Value::Object(msg)) = chunk.get_mut("message") else {
            // An error line (or something odd): what is held goes out before it.
            self.release(out);
            return verbatim(line, out);
        };
        let content = msg.get("content").and_then(Value::as_str).unwrap_or("");
        if msg
            .get("tool_calls")
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty())
        {
            // Ollama's own calls: nothing is salvaged; held text goes out with them.
            self.off = true;
            let held = self.rec.finish_as_text();
            if held.is_empty() {
                return verbatim(line, out);
            }
            let text = held + content;
            msg.insert("content".into(), Value::String(text));
            return write(&chunk, out);
        }
        let mut text = self.rec.feed(content);
        if !done {
            if text == content {
                return verbatim(line, out);
            }
            let other = msg
                .get("thinking")
                .and_then(Value::as_str)
                .is_some_and(|t| !t.is_empty());
            if text.is_empty() && !other {
                return; // all of it held
            }
            msg.insert("content".into(), Value::String(text));
            return write(&chunk, out);
        }
        self.off = true;
        let end = self.rec.finish();
        text.push_str(&end.text);
        if end.calls.is_empty() && text == content {
            return verbatim(line, out);
        }
        msg.insert("content".into(), Value::String(text));
        if !end.calls.is_empty() {
            self.salvaged = end.calls.len();
            msg.insert("tool_calls".into(), self.native_calls(&end.calls));
        }
        write(&chunk, out)
    }

    /// [`ChatSalvage::line`], handing each resulting line (without its newline) to `f`.
    pub fn each_line(&mut self, line: &[u8], f: impl FnMut(&[u8])) {
        let mut out = Vec::new();
        self.line(line, &mut out);
        split(&out, f);
    }

    /// [`ChatSalvage::finish`], handing each resulting line to `f`.
    pub fn finish_each(&mut self, f: impl FnMut(&[u8])) {
        let mut out = Vec::new();
        self.finish(&mut out);
        split(&out, f);
    }

    /// The answer ended without its final chunk: the held text goes out as content.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.off {
            self.release(out);
        }
    }

    /// Held text as a chunk of its own.
    fn release(&mut self, out: &mut Vec<u8>) {
        let text = self.rec.finish_as_text();
        if text.is_empty() {
            return;
        }
        let chunk = json!({
            "model": self.model, "created_at": self.created_at,
            "message": {"role": "assistant", "content": text}, "done": false,
        });
        write(chunk.as_object().expect("an object"), out);
    }

    /// The calls in Ollama's shape, with ids like Ollama's (`call_` + 8 of `[a-z0-9]`).
    fn native_calls(&self, calls: &[Call]) -> Value {
        let calls = calls.iter().enumerate().map(|(i, c)| {
            json!({"id": call_id(&self.seed, i), "function": {
                "index": i, "name": c.name, "arguments": c.arguments}})
        });
        Value::Array(calls.collect())
    }
}

/// A call's id from the request's seed and its index.
fn call_id(seed: &str, index: usize) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (seed, index).hash(&mut h);
    let mut n = h.finish();
    let mut id = String::from("call_");
    for _ in 0..8 {
        let d = (n % 36) as u32;
        n /= 36;
        id.push(char::from_digit(d, 36).expect("a base-36 digit"));
    }
    id
}

fn split(lines: &[u8], f: impl FnMut(&[u8])) {
    lines
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .for_each(f);
}

fn verbatim(line: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(line);
    out.push(b'\n');
}

fn write(chunk: &Map<String, Value>, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, chunk).expect("a JSON map serialises");
    out.push(b'\n');
}
