//! Reads token counts from a response as it streams past, without parsing every chunk:
//! only a line that is Ollama's final chunk (`"done":true`) or carries OpenAI `usage`
//! is looked at, and only its last occurrences of the count fields are read (Ollama
//! writes them after the message, so text inside the message cannot spoof them).
//! It also notices a line that *is* an error (`{"error":...}`, or `data: {"error":...}`
//! in SSE): Ollama's way to say a stream failed after its 200 status.

/// Longest line tail kept while scanning (the counts sit at a line's end).
const TAIL: usize = 16 * 1024;

/// Token counts seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: Option<u64>,
    pub completion: Option<u64>,
}

/// Incremental scanner over a response body.
#[derive(Debug, Default)]
pub struct TokenScanner {
    line: Vec<u8>,
    /// The first bytes of the current line (the tail above may have lost them).
    head: Vec<u8>,
    tokens: Tokens,
    error: bool,
}

/// Bytes of a line's start kept to recognise an error line.
const HEAD: usize = 16;

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

    /// Ends the body: scans a last line without a newline.
    pub fn finish(&mut self) -> Tokens {
        self.end_line();
        self.tokens
    }

    /// Counts seen so far.
    pub fn tokens(&self) -> Tokens {
        self.tokens
    }

    /// Has a line been an error object (`{"error":...}`)?
    pub fn saw_error(&self) -> bool {
        self.error
    }

    fn push(&mut self, part: &[u8]) {
        if self.head.len() < HEAD {
            let n = (HEAD - self.head.len()).min(part.len());
            self.head.extend_from_slice(&part[..n]);
        }
        self.line.extend_from_slice(part);
        if self.line.len() > 2 * TAIL {
            let cut = self.line.len() - TAIL;
            self.line.drain(..cut);
        }
    }

    fn end_line(&mut self) {
        let head = self.head.trim_ascii_start();
        let head = head
            .strip_prefix(b"data:")
            .unwrap_or(head)
            .trim_ascii_start();
        if head.starts_with(b"{\"error\"") {
            self.error = true;
        }
        self.head.clear();
        let line = std::mem::take(&mut self.line);
        if contains(&line, b"\"done\":true") {
            if let Some(n) = last_number(&line, b"\"prompt_eval_count\":") {
                self.tokens.prompt = Some(n);
            }
            if let Some(n) = last_number(&line, b"\"eval_count\":") {
                self.tokens.completion = Some(n);
            }
        } else if contains(&line, b"\"usage\":{") {
            if let Some(n) = last_number(&line, b"\"prompt_tokens\":") {
                self.tokens.prompt = Some(n);
            }
            if let Some(n) = last_number(&line, b"\"completion_tokens\":") {
                self.tokens.completion = Some(n);
            }
        }
        self.line = line;
        self.line.clear();
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn last_number(hay: &[u8], key: &[u8]) -> Option<u64> {
    let pos = hay.windows(key.len()).rposition(|w| w == key)? + key.len();
    let rest = &hay[pos..];
    let rest = &rest[rest.iter().take_while(|b| **b == b' ').count()..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
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
}
