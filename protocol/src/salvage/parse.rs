//! Reads held text as tool calls, from its first byte: the whole text must be calls in
//! the recognised forms (bare JSON objects or an array of them, a ```` ```json ````
//! fence, `<tool_call>…</tool_call>` blocks, `<|python_tag|>` JSON, a pythonic list),
//! separated by blanks, commas or semicolons. A prefix that may still become that is
//! [`Verdict::Hold`]; anything else is [`Verdict::No`].

use serde_json::{Map, Value};

use super::call::{Call, Stop};
use super::python::Py;
use super::tools::Tools;

/// What held text is.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    /// Still possibly calls (and, at the end, not complete ones: never returned then).
    Hold,
    /// Calls, every one valid, and nothing else.
    Calls(Vec<Call>),
    /// Not calls.
    No,
}

const FENCE: &str = "```";
const TAG_OPEN: &str = "<tool_call>";
const TAG_CLOSE: &str = "</tool_call>";
const PYTHON_TAG: &str = "<|python_tag|>";
/// The literals a call may start with (besides `{` and `[`).
pub(super) const OPENERS: [&str; 3] = [FENCE, TAG_OPEN, PYTHON_TAG];

/// The info strings a fence may carry.
const FENCE_INFO: [&str; 2] = ["", "json"];

/// Reads `s` as calls of `tools`; `end` says the reply is over (an open fence or tag then
/// closes itself).
pub(super) fn classify(s: &str, tools: &Tools, end: bool) -> Verdict {
    let mut p = Parser {
        s,
        pos: 0,
        calls: Vec::new(),
        tools,
    };
    match p.all() {
        Err(Stop::No) => Verdict::No,
        Err(Stop::More) if end => Verdict::No,
        Err(Stop::More) => Verdict::Hold,
        Ok(()) if p.calls.is_empty() => {
            if end {
                Verdict::No
            } else {
                Verdict::Hold
            }
        }
        Ok(()) if end => Verdict::Calls(p.calls),
        Ok(()) => Verdict::Hold,
    }
}

/// The keys a call object may have.
const CALL_KEYS: [&str; 4] = ["name", "type", "parameters", "arguments"];

/// A JSON object (`s` starts with `{`) whose first key no call object has is decided at
/// once, not when it closes (data, not a call: no need to hold it).
fn first_key(s: &str) -> Result<(), Stop> {
    let rest = s[1..].trim_start();
    let Some(key) = rest.strip_prefix('"') else {
        return if rest.is_empty() {
            Err(Stop::More)
        } else {
            Err(Stop::No)
        };
    };
    match key.find('"') {
        Some(end) if CALL_KEYS.contains(&&key[..end]) => Ok(()),
        None if CALL_KEYS.iter().any(|k| k.starts_with(key)) => Err(Stop::More),
        _ => Err(Stop::No),
    }
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
    calls: Vec<Call>,
    tools: &'a Tools,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.s[self.pos..]
    }

    /// The whole text, item by item.
    fn all(&mut self) -> Result<(), Stop> {
        let mut fence = false;
        let mut tag = false;
        loop {
            self.pos = self.s.len() - self.rest().trim_start().len();
            let rest = self.rest();
            if rest.is_empty() {
                return Ok(());
            }
            if rest.starts_with(FENCE) {
                self.pos += FENCE.len();
                if fence {
                    fence = false;
                } else if tag {
                    return Err(Stop::No);
                } else {
                    self.fence_info()?;
                    fence = true;
                }
            } else if rest.starts_with(TAG_OPEN) {
                if tag || fence {
                    return Err(Stop::No);
                }
                self.pos += TAG_OPEN.len();
                tag = true;
            } else if rest.starts_with(TAG_CLOSE) {
                if !tag {
                    return Err(Stop::No);
                }
                self.pos += TAG_CLOSE.len();
                tag = false;
            } else if rest.starts_with(PYTHON_TAG) {
                if tag || fence || !self.calls.is_empty() {
                    return Err(Stop::No);
                }
                self.pos += PYTHON_TAG.len();
            } else if rest.starts_with('{') {
                first_key(rest)?;
                let v = self.json()?;
                self.push(&v)?;
            } else if rest.starts_with('[') {
                self.list()?;
            } else if !self.calls.is_empty() && (rest.starts_with(',') || rest.starts_with(';')) {
                self.pos += 1;
            } else if [TAG_CLOSE, FENCE, TAG_OPEN, PYTHON_TAG]
                .iter()
                .any(|l| l.starts_with(rest))
            {
                return Err(Stop::More);
            } else {
                return Err(Stop::No);
            }
        }
    }

    /// A fence's info string, up to its newline.
    fn fence_info(&mut self) -> Result<(), Stop> {
        let rest = self.rest();
        let Some(nl) = rest.find('\n') else {
            let info = rest.trim().to_ascii_lowercase();
            return match FENCE_INFO.iter().any(|i| i.starts_with(&info)) {
                true => Err(Stop::More),
                false => Err(Stop::No),
            };
        };
        let info = rest[..nl].trim().to_ascii_lowercase();
        if !FENCE_INFO.contains(&info.as_str()) {
            return Err(Stop::No);
        }
        self.pos += nl + 1;
        Ok(())
    }

    /// One JSON value from here.
    fn json(&mut self) -> Result<Value, Stop> {
        let mut it = serde_json::Deserializer::from_str(self.rest()).into_iter::<Value>();
        match it.next() {
            Some(Ok(v)) => {
                self.pos += it.byte_offset();
                Ok(v)
            }
            Some(Err(e)) if e.is_eof() => Err(Stop::More),
            _ => Err(Stop::No),
        }
    }

    /// `[` … : a JSON array of calls or a pythonic list.
    fn list(&mut self) -> Result<(), Stop> {
        let inner = self.rest()[1..].trim_start();
        match inner.bytes().next() {
            None => Err(Stop::More),
            Some(b'{') => match first_key(inner).and_then(|()| self.json())? {
                Value::Array(items) if !items.is_empty() => {
                    items.iter().try_for_each(|v| self.push(v))
                }
                _ => Err(Stop::No),
            },
            Some(b) if b.is_ascii_alphabetic() || b == b'_' => {
                let mut py = Py::new(self.s, self.pos, self.tools);
                let calls = py.list()?;
                self.pos = py.pos;
                for c in calls {
                    self.accept(c.name, c.arguments)?;
                }
                Ok(())
            }
            Some(_) => Err(Stop::No),
        }
    }

    /// A call object: `{"name", "parameters"|"arguments"}` (arguments an object or a
    /// JSON string of one; `"type": "function"` allowed), nothing else.
    fn push(&mut self, v: &Value) -> Result<(), Stop> {
        let o = v.as_object().ok_or(Stop::No)?;
        let name = o.get("name").and_then(Value::as_str).ok_or(Stop::No)?;
        let mut args = None;
        for (k, v) in o {
            match k.as_str() {
                "name" => {}
                "type" if v == "function" => {}
                "parameters" | "arguments" if args.is_none() => args = Some(v),
                _ => return Err(Stop::No),
            }
        }
        let args = match args {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(Value::String(s)) => match serde_json::from_str(s) {
                Ok(Value::Object(m)) => m,
                _ => return Err(Stop::No),
            },
            Some(_) => return Err(Stop::No),
        };
        self.accept(name.to_owned(), args)
    }

    /// A call of an offered tool whose arguments validate.
    fn accept(&mut self, name: String, arguments: Map<String, Value>) -> Result<(), Stop> {
        if !self.tools.accepts(&name, &arguments) {
            return Err(Stop::No);
        }
        self.calls.push(Call { name, arguments });
        Ok(())
    }
}
