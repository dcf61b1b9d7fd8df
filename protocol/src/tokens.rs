//! Reads token counts from a response as it streams past. Lines are parsed as JSON, so
//! the counts do not depend on how the upstream formats it (`"done": true` with spaces
//! reads the same as `"done":true`), and only top-level fields count (text inside the
//! message cannot spoof them). Only a line that can be Ollama's final chunk (a `"done"`
//! key followed by `true`), an OpenAI `usage` object or an error object is parsed; the
//! rest are passed over after a byte search. A body whose first line opens an object it
//! does not close (a pretty-printed non-streamed answer) is parsed whole at its end.
//! An `/api/embed` answer (`embeddings` and `prompt_eval_count`, no `done`) gives its
//! prompt count.
//! It also notices an error object (`{"error":...}`, or `data: {"error":...}` in SSE):
//! Ollama's way to say a stream failed after its 200 status.

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

/// Longest line (or pretty-printed body) buffered for parsing, as the host's line limit
/// elsewhere; the counts of a longer one are not read.
const MAX_LINE: usize = 16 << 20;

/// Token counts seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: Option<u64>,
    pub completion: Option<u64>,
}

/// How the body is cut into JSON values.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No non-blank line ended yet.
    #[default]
    Undecided,
    /// One value per line: NDJSON, SSE, or one compact object.
    Lines,
    /// One value over many lines: the buffer holds the whole body.
    Document,
}

/// Incremental scanner over a response body.
#[derive(Debug, Default)]
pub struct TokenScanner {
    /// The current line (the whole body in `Document` mode).
    line: Vec<u8>,
    /// The current line (or document) outgrew `MAX_LINE` and was dropped.
    overlong: bool,
    mode: Mode,
    tokens: Tokens,
    error: bool,
    /// Non-blank lines seen (chunks of a stream): a token budget's estimate of a
    /// completion cut off before its count.
    chunks: u64,
}

/// The top-level fields of a chunk that carry counts or an error; the rest is skipped
/// unread.
#[derive(Deserialize)]
struct Chunk {
    done: Option<Value>,
    prompt_eval_count: Option<Value>,
    eval_count: Option<Value>,
    usage: Option<Value>,
    error: Option<IgnoredAny>,
    embeddings: Option<IgnoredAny>,
}

impl TokenScanner {
    pub fn new() -> Self {
        Self::default()
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

    /// Ends the body: scans a last line without a newline, or a pretty-printed body.
    pub fn finish(&mut self) -> Tokens {
        self.end_line();
        if self.mode == Mode::Document {
            let doc = std::mem::take(&mut self.line);
            if !std::mem::take(&mut self.overlong) {
                self.read(doc.trim_ascii());
            }
        }
        self.tokens
    }

    /// Counts seen so far.
    pub fn tokens(&self) -> Tokens {
        self.tokens
    }

    /// Non-blank lines (stream chunks) ended so far.
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// Has a line been an error object (`{"error":...}`)?
    pub fn saw_error(&self) -> bool {
        self.error
    }

    fn push(&mut self, part: &[u8]) {
        if self.overlong {
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
        match self.mode {
            Mode::Document => return self.push(b"\n"),
            Mode::Lines => {}
            Mode::Undecided if self.overlong => self.mode = Mode::Lines,
            Mode::Undecided => {
                let t = self.line.trim_ascii();
                if t.is_empty() {
                    self.line.clear();
                    return;
                }
                if t.starts_with(b"{") && !t.ends_with(b"}") {
                    self.mode = Mode::Document;
                    return self.push(b"\n");
                }
                self.mode = Mode::Lines;
            }
        }
        let line = std::mem::take(&mut self.line);
        if self.overlong || !line.trim_ascii().is_empty() {
            self.chunks += 1;
        }
        if !std::mem::take(&mut self.overlong) {
            self.scan_line(&line);
        }
        // Reuse the allocation for the next line.
        self.line = line;
        self.line.clear();
    }

    /// Parses the line if it can carry counts or an error.
    fn scan_line(&mut self, line: &[u8]) {
        let t = line.trim_ascii();
        let t = t.strip_prefix(b"data:").map_or(t, <[u8]>::trim_ascii_start);
        if !t.starts_with(b"{") {
            return;
        }
        if has_key(t, b"\"done\"", b"true")
            || has_key(t, b"\"usage\"", b"{")
            || has_key(t, b"\"error\"", b"")
            || has_key(t, b"\"prompt_eval_count\"", b"")
        {
            self.read(t);
        }
    }

    /// Reads one JSON value: Ollama's final chunk (`done: true` with the counts), an
    /// OpenAI `usage` object, an error object.
    fn read(&mut self, value: &[u8]) {
        let Ok(c) = serde_json::from_slice::<Chunk>(value) else {
            return;
        };
        if c.error.is_some() {
            self.error = true;
        }
        let count = |v: Option<&Value>| v.and_then(Value::as_u64);
        if c.done == Some(Value::Bool(true)) {
            if let Some(n) = count(c.prompt_eval_count.as_ref()) {
                self.tokens.prompt = Some(n);
            }
            if let Some(n) = count(c.eval_count.as_ref()) {
                self.tokens.completion = Some(n);
            }
        } else if c.done.is_none() && c.embeddings.is_some() {
            // `/api/embed`: one object with the input's count and no `done`.
            if let Some(n) = count(c.prompt_eval_count.as_ref()) {
                self.tokens.prompt = Some(n);
            }
        } else if let Some(Value::Object(u)) = &c.usage {
            if let Some(n) = count(u.get("prompt_tokens")) {
                self.tokens.prompt = Some(n);
            }
            if let Some(n) = count(u.get("completion_tokens")) {
                self.tokens.completion = Some(n);
            }
        }
    }
}

/// Does `key` (quoted) occur followed by JSON whitespace, `:`, whitespace and `then`?
/// A quoted word can only be a string of the JSON (quotes inside strings are escaped),
/// so this finds every line where it is a key, and a few more that parsing sorts out.
///
/// Runs on every streamed line: it jumps from one occurrence of the key's first byte to
/// the next and compares only where the second byte matches too. (Comparing at every
/// offset took 10.7 % of bridge-host's CPU samples with 64 streams; this takes 3.2 %.)
fn has_key(hay: &[u8], key: &[u8], then: &[u8]) -> bool {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let Some(&first) = key.first() else {
        return false;
    };
    let mut from = 0;
    while let Some(off) = hay[from..].iter().position(|&b| b == first) {
        let at = from + off;
        from = at + 1;
        // The second byte first: most quotes start other words.
        if hay.get(at + 1) != key.get(1) {
            continue;
        }
        let Some(rest) = hay[at..].strip_prefix(key) else {
            continue;
        };
        let rest = &rest[rest.iter().take_while(|b| ws(b)).count()..];
        let Some(rest) = rest.strip_prefix(b":") else {
            continue;
        };
        let rest = &rest[rest.iter().take_while(|b| ws(b)).count()..];
        if rest.starts_with(then) {
            return true;
        }
    }
    false
}

#[cfg(test)]
#[path = "tokens_tests.rs"]
mod tests;
