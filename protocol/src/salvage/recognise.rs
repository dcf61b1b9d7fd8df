//! The incremental part of the salvage: which text passes at once, which is held as a
//! possible call, and what held text turns out to be at the end.

use std::sync::Arc;

use super::call::Call;
use super::parse::{classify, Verdict, OPENERS};
use super::tools::Tools;

/// Most text held while deciding whether it is a call; past it, it goes out as text.
pub const MAX_HOLD: usize = 64 << 10;

/// What remains at the end of a reply.
#[derive(Debug, Default, PartialEq)]
pub struct End {
    /// Held text that turned out not to be calls: goes out as content, verbatim.
    pub text: String,
    /// The calls (all of them valid), when the held text was calls and nothing else.
    pub calls: Vec<Call>,
}

/// Decides, delta by delta, which text passes at once and which is held as a possible
/// call. Text goes out in order and unchanged, except held text that ends the reply as
/// valid calls.
#[derive(Debug)]
pub struct Recogniser {
    tools: Arc<Tools>,
    /// Text from a possible call's start on, not yet passed.
    held: String,
    /// Past [`MAX_HOLD`]: nothing more is held.
    off: bool,
}

impl Recogniser {
    pub fn new(tools: Arc<Tools>) -> Self {
        Recogniser {
            tools,
            held: String::new(),
            off: false,
        }
    }

    /// Whether some text is held.
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// The next content delta: the text to pass on now (possibly empty).
    pub fn feed(&mut self, delta: &str) -> String {
        if self.off {
            return delta.to_owned();
        }
        let mut out = String::new();
        if self.held.is_empty() {
            // The usual case: plain text with nothing held passes without a copy of it
            // into the hold.
            match start(delta) {
                None => return delta.to_owned(),
                Some(i) => {
                    out.push_str(&delta[..i]);
                    self.held.push_str(&delta[i..]);
                }
            }
        } else {
            self.held.push_str(delta);
        }
        self.settle(&mut out);
        out
    }

    /// Releases what is decided: text before a possible call, and held text that can no
    /// longer be one.
    fn settle(&mut self, out: &mut String) {
        loop {
            match start(&self.held) {
                None => {
                    out.push_str(&self.held);
                    self.held.clear();
                    return;
                }
                Some(0) => {}
                Some(i) => {
                    out.push_str(&self.held[..i]);
                    self.held.drain(..i);
                }
            }
            match classify(&self.held, &self.tools, false) {
                Verdict::Hold if self.held.len() > MAX_HOLD => {
                    out.push_str(&self.held);
                    self.held = String::new();
                    self.off = true;
                    return;
                }
                Verdict::Hold | Verdict::Calls(_) => return,
                Verdict::No => {
                    // Not a call from here: release up to the next possible start.
                    let first = self.held.chars().next().map_or(1, char::len_utf8);
                    let next = start(&self.held[first..]).map_or(self.held.len(), |i| first + i);
                    out.push_str(&self.held[..next]);
                    self.held.drain(..next);
                }
            }
        }
    }

    /// Gives up: the held text, verbatim; nothing more is held.
    pub fn finish_as_text(&mut self) -> String {
        self.off = true;
        std::mem::take(&mut self.held)
    }

    /// The reply ended: the held text as calls (all valid) or as text.
    pub fn finish(&mut self) -> End {
        let held = std::mem::take(&mut self.held);
        if held.is_empty() {
            return End::default();
        }
        if let Verdict::Calls(calls) = classify(&held, &self.tools, true) {
            return End {
                text: String::new(),
                calls,
            };
        }
        // Not calls as a whole (an unfinished form, text after the calls): verbatim.
        End {
            text: held,
            calls: Vec::new(),
        }
    }
}

/// Where in `s` a call may start: `{`, `[`, or one of [`OPENERS`] (or `s`'s end being the
/// beginning of one).
fn start(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' | b'[' => return Some(i),
            b'`' | b'<' => {
                let rest = &s[i..];
                if OPENERS
                    .iter()
                    .any(|o| rest.starts_with(o) || o.starts_with(rest))
                {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}
