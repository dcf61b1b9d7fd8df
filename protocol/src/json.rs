//! Strict JSON for request bodies. Go's `encoding/json` (which Ollama uses) keeps the
//! *last* of duplicate keys and matches keys case-insensitively with Unicode simple
//! folding, so a body the bridge reads one way could be read another way by Ollama.
//! We refuse every such ambiguity: duplicate keys, keys equal under Go's folding,
//! excessive nesting, invalid UTF-8 and trailing data.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use thiserror::Error;

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 64;

/// Why a body is not acceptable JSON.
#[derive(Debug, Error)]
pub enum JsonError {
    #[error("request body is empty")]
    Empty,
    #[error("request body is not valid UTF-8")]
    Utf8,
    #[error("request body is not a JSON object")]
    NotObject,
    #[error("invalid JSON: {0}")]
    Syntax(#[source] serde_json::Error),
}

/// Parses `bytes` as one JSON object, strictly.
pub fn parse_strict_object(bytes: &[u8]) -> Result<Map<String, Value>, JsonError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(JsonError::Empty);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| JsonError::Utf8)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let v = StrictSeed { depth: 0 }
        .deserialize(&mut de)
        .map_err(JsonError::Syntax)?;
    de.end().map_err(JsonError::Syntax)?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(JsonError::NotObject),
    }
}

/// Go's `encoding/json` key folding: ASCII upper-cased, other runes mapped through
/// simple lower- then upper-case (so `ſ` = `s` = `S` and Kelvin `K` = `k`).
pub fn go_fold(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii() {
                return c.to_ascii_uppercase();
            }
            let lower = c.to_lowercase().next().unwrap_or(c);
            let mut up = lower.to_uppercase();
            match (up.next(), up.next()) {
                (Some(u), None) => u,
                _ => lower,
            }
        })
        .collect()
}

struct StrictSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor { depth: self.depth })
    }
}

struct StrictVisitor {
    depth: usize,
}

impl StrictVisitor {
    fn child<E: de::Error>(&self) -> Result<StrictSeed, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "nesting deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(StrictSeed {
            depth: self.depth + 1,
        })
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self.child()?)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        let mut keys = Keys::default();
        while let Some(key) = map.next_key::<String>()? {
            keys.admit::<A::Error>(&key)?;
            let v = map.next_value_seed(self.child()?)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// The keys of one object so far: refuses a duplicate, or a key equal to an earlier one
/// under Go's folding.
#[derive(Default)]
pub(crate) struct Keys {
    folded: HashMap<String, String>,
}

impl Keys {
    pub(crate) fn admit<E: de::Error>(&mut self, key: &str) -> Result<(), E> {
        match self.folded.insert(go_fold(key), key.to_owned()) {
            None => Ok(()),
            Some(prev) if prev == key => Err(E::custom(format_args!("duplicate key {key:?}"))),
            Some(prev) => Err(E::custom(format_args!(
                "keys {prev:?} and {key:?} differ only by case; Ollama would read them as one"
            ))),
        }
    }
}

/// Looks up `field` the way Go would: an exact key, else the one key equal under folding.
/// The strict parser guarantees at most one key folds to `field`.
pub fn get_folded<'a>(obj: &'a Map<String, Value>, field: &str) -> Option<(&'a str, &'a Value)> {
    if let Some((k, v)) = obj.get_key_value(field) {
        return Some((k.as_str(), v));
    }
    let want = go_fold(field);
    obj.iter()
        .find(|(k, _)| go_fold(k) == want)
        .map(|(k, v)| (k.as_str(), v))
}

/// Renames a key that Go would read as `field` to its canonical spelling, so what is
/// forwarded says plainly what was decided on.
pub fn canonicalise_key(obj: &mut Map<String, Value>, field: &str) {
    if obj.contains_key(field) {
        return;
    }
    let want = go_fold(field);
    let found = obj.keys().find(|k| go_fold(k) == want).cloned();
    if let Some(k) = found {
        if let Some(v) = obj.remove(&k) {
            obj.insert(field.to_owned(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        parse_strict_object(s.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn accepts_plain_objects() {
        let m =
            parse_strict_object(br#"{"model":"x","options":{"num_ctx":8},"a":[1,2.5,null,true]}"#)
                .unwrap();
        assert_eq!(m["model"], "x");
    }

    #[test]
    fn rejects_ambiguity() {
        assert!(err(r#"{"model":"a","model":"b"}"#).contains("duplicate"));
        assert!(err(r#"{"model":"a","Model":"b"}"#).contains("differ only by case"));
        assert!(err(r#"{"o":{"num_ctx":1,"NUM_CTX":2}}"#).contains("differ only by case"));
        // U+017F LATIN SMALL LETTER LONG S folds to 's'; U+212A KELVIN SIGN to 'k'.
        assert!(err("{\"stream\":true,\"\u{17f}tream\":false}").contains("differ only by case"));
        assert!(err("{\"keep_alive\":1,\"\u{212a}eep_alive\":2}").contains("differ only by case"));
        assert!(err("[1]").contains("not a JSON object"));
        assert!(err("").contains("empty"));
        assert!(err(r#"{"a":1} {"b":2}"#).contains("invalid JSON"));
        assert!(matches!(
            parse_strict_object(b"{\"a\":\"\xff\"}"),
            Err(JsonError::Utf8)
        ));
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(err(&format!("{{\"a\":{deep}}}")).contains("nesting"));
    }

    #[test]
    fn numbers_are_forwarded_as_sent() {
        // Found by fuzz/json_strict: without serde_json's float_roundtrip a big integer or
        // a long decimal was read 1 ULP off, so the forwarded bytes named another number.
        for text in [
            r#"{"d":1844622337203685477580567898}"#,
            r#"{"t":0.7000000000000001,"p":1.8446223372036857e27}"#,
        ] {
            let m = parse_strict_object(text.as_bytes()).unwrap();
            let again = parse_strict_object(&serde_json::to_vec(&m).unwrap()).unwrap();
            assert_eq!(again, m, "{text}");
        }
    }

    #[test]
    fn folding_matches_go() {
        assert_eq!(go_fold("model"), "MODEL");
        assert_eq!(go_fold("\u{17f}"), "S");
        assert_eq!(go_fold("\u{212a}"), "K");
        assert_eq!(go_fold("ß"), "ß");
        let m = parse_strict_object(br#"{"MODEL":"x"}"#).unwrap();
        assert_eq!(get_folded(&m, "model").unwrap().1, "x");
        let mut m = m;
        canonicalise_key(&mut m, "model");
        assert_eq!(m["model"], "x");
        assert!(!m.contains_key("MODEL"));
    }
}
