//! A checked request body that costs about its own size, not a tree many times larger.
//!
//! The whole body is checked by the strict scanner (duplicate and case-folded keys,
//! nesting, UTF-8, trailing data) without building anything. Then only the top-level
//! fields the policy reads or rewrites (`model`, `options`, `keep_alive`, `stream`, …)
//! are parsed into values; the bulky ones (`messages`, `prompt`, `images`, `tools`, …)
//! stay as byte ranges of the body as the sandbox wrote them — checked, never trusted
//! blindly — and are written out as they came. What goes upstream is the re-serialised
//! parsed fields followed by those checked ranges.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::json::{go_fold, JsonError};

/// Top-level fields of native requests that may be large and that the policy never reads:
/// kept as the sandbox wrote them (compared under Go's key folding).
pub const BULKY_FIELDS: [&str; 9] = [
    "messages", "prompt", "images", "tools", "input", "system", "template", "context", "suffix",
];

/// A request body that passed the strict scanner.
#[derive(Debug, Clone)]
pub struct CheckedBody {
    /// The fields the policy may read and rewrite, parsed.
    pub fields: Map<String, Value>,
    /// The fields kept as written: key, and the value's byte range in `source`.
    kept: Vec<(String, Range<usize>)>,
    /// The body as received (only while some field is kept from it).
    source: Bytes,
}

impl CheckedBody {
    /// Checks `body` strictly; parses every top-level field except those `keep` names
    /// (given Go's folded key), which stay as checked bytes.
    pub fn parse(body: Bytes, keep: impl Fn(&str) -> bool) -> Result<CheckedBody, JsonError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(JsonError::Empty);
        }
        let text = std::str::from_utf8(&body).map_err(|_| JsonError::Utf8)?;
        if !crate::scan::check(text).map_err(JsonError::Syntax)? {
            return Err(JsonError::NotObject);
        }
        let top: Vec<(String, &RawValue)> = {
            let mut de = serde_json::Deserializer::from_str(text);
            let v = de.deserialize_any(TopLevel).map_err(JsonError::Syntax)?;
            v.ok_or(JsonError::NotObject)?
        };
        let base = text.as_ptr() as usize;
        let mut fields = Map::new();
        let mut kept = Vec::new();
        for (key, raw) in top {
            if keep(&go_fold(&key)) {
                let start = raw.get().as_ptr() as usize - base;
                kept.push((key, start..start + raw.get().len()));
            } else {
                let v: Value = serde_json::from_str(raw.get()).map_err(JsonError::Syntax)?;
                fields.insert(key, v);
            }
        }
        let source = if kept.is_empty() { Bytes::new() } else { body };
        Ok(CheckedBody {
            fields,
            kept,
            source,
        })
    }

    /// Checks `body` strictly and parses every field (small bodies, and those whose
    /// every field is read, as the OpenAI translation does).
    pub fn parse_all(body: Bytes) -> Result<CheckedBody, JsonError> {
        CheckedBody::parse(body, |_| false)
    }

    /// Checks a native request's body, keeping [`BULKY_FIELDS`] as written.
    pub fn parse_native(body: Bytes) -> Result<CheckedBody, JsonError> {
        let bulky: Vec<String> = BULKY_FIELDS.iter().map(|f| go_fold(f)).collect();
        CheckedBody::parse(body, |k| bulky.iter().any(|b| b == k))
    }

    /// The body to send upstream, as pieces, without copying the kept fields: the
    /// re-serialised parsed fields, then each kept field's key and its bytes (slices of
    /// the received body).
    pub fn chunks(&self) -> Vec<Bytes> {
        let mut out = Vec::with_capacity(1 + 2 * self.kept.len());
        let mut head = Vec::with_capacity(256);
        head.push(b'{');
        for (k, v) in &self.fields {
            if head.len() > 1 {
                head.push(b',');
            }
            serde_json::to_writer(&mut head, k).expect("a string serialises");
            head.push(b':');
            serde_json::to_writer(&mut head, v).expect("a JSON value serialises");
        }
        for (n, (k, r)) in self.kept.iter().enumerate() {
            if head.len() > 1 || n > 0 {
                head.push(b',');
            }
            serde_json::to_writer(&mut head, k).expect("a string serialises");
            head.push(b':');
            out.push(Bytes::from(std::mem::take(&mut head)));
            out.push(self.source.slice(r.clone()));
        }
        head.push(b'}');
        out.push(Bytes::from(head));
        out
    }

    /// The body to send upstream as one buffer (the pieces of [`CheckedBody::chunks`]).
    pub fn to_vec(&self) -> Vec<u8> {
        self.chunks().concat()
    }

    /// The whole body as one value (for `log_prompts`, which records what was forwarded).
    pub fn to_value(&self) -> Value {
        serde_json::from_slice(&self.to_vec()).expect("the forwarded body is JSON")
    }

    /// One top-level field as a value, parsed on demand when it is kept as written
    /// (keys compared under Go's folding, as Ollama reads them; the last one wins).
    pub fn field(&self, key: &str) -> Option<Value> {
        let key = go_fold(key);
        if let Some(r) = self.kept.iter().rev().find(|(k, _)| go_fold(k) == key) {
            return serde_json::from_slice(&self.source[r.1.clone()]).ok();
        }
        let mut found = None;
        for (k, v) in &self.fields {
            if go_fold(k) == key {
                found = Some(v);
            }
        }
        found.cloned()
    }

    /// The names of the fields kept as written.
    pub fn kept_fields(&self) -> impl Iterator<Item = &str> {
        self.kept.iter().map(|(k, _)| k.as_str())
    }
}

/// The top-level object as (key, value as written) pairs; `None` if not an object.
struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = Option<Vec<(String, &'de RawValue)>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            out.push((key, map.next_value::<&'de RawValue>()?));
        }
        Ok(Some(out))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;
