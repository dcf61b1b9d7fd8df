//! The double's "tokenizer" (one token per whitespace-separated word) and Ollama's
//! silent prompt truncation: oldest non-system messages dropped (system messages and
//! the last message kept), then tokens cut keeping the tail.

use serde_json::Value;

/// Tokens in a text.
pub fn count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Tokens of one chat message (content plus tool-call names and arguments).
pub fn message_tokens(m: &Value) -> u64 {
    let mut n = m.get("content").and_then(Value::as_str).map_or(0, count);
    if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
        n += calls.len() as u64;
    }
    n
}

/// What the model saw of a chat prompt under `num_ctx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Tokens of the whole prompt as sent.
    pub full: u64,
    /// Tokens evaluated (`prompt_eval_count`).
    pub evaluated: u64,
    /// Messages dropped from the front.
    pub dropped_messages: usize,
}

/// Applies Ollama's truncation to a list of chat messages.
pub fn truncate_chat(messages: &[Value], num_ctx: u64) -> Seen {
    let sizes: Vec<u64> = messages.iter().map(message_tokens).collect();
    let full: u64 = sizes.iter().sum();
    let is_system = |m: &Value| m.get("role").and_then(Value::as_str) == Some("system");
    let mut total = full;
    let mut dropped = 0;
    let last = messages.len().saturating_sub(1);
    for (i, m) in messages.iter().enumerate() {
        if total <= num_ctx {
            break;
        }
        if i == last || is_system(m) {
            continue;
        }
        total -= sizes[i];
        dropped += 1;
    }
    Seen {
        full,
        evaluated: total.min(num_ctx),
        dropped_messages: dropped,
    }
}

/// Applies truncation to a generate prompt (system + prompt).
pub fn truncate_text(text: &str, num_ctx: u64) -> Seen {
    let full = count(text);
    Seen {
        full,
        evaluated: full.min(num_ctx),
        dropped_messages: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn long_system_prompt_is_cut_to_num_ctx() {
        let sys = "w ".repeat(6000);
        let msgs = vec![
            json!({"role":"system","content":sys}),
            json!({"role":"user","content":"old question here"}),
            json!({"role":"assistant","content":"old answer"}),
            json!({"role":"user","content":"what now"}),
        ];
        let s = truncate_chat(&msgs, 4096);
        assert_eq!(s.full, 6007);
        assert_eq!(s.evaluated, 4096);
        assert_eq!(s.dropped_messages, 2);
        let s = truncate_chat(&msgs, 8192);
        assert_eq!(s.evaluated, 6007);
        assert_eq!(s.dropped_messages, 0);
    }
}
