//! The strict scanner: checks a JSON document by the same rules as the strict parser
//! ([`crate::json`]: duplicate keys, keys equal under Go's folding, nesting past
//! [`MAX_DEPTH`], bad escapes, lone surrogates, control characters, numbers out of range,
//! trailing data) without building anything. Only object keys are decoded (to compare
//! them); string values are checked in place, so a 32 MiB message costs nothing extra.

use serde::de::Error as _;

use crate::json::{Keys, MAX_DEPTH};

/// Checks `text`; returns whether the document is an object.
pub fn check(text: &str) -> Result<bool, serde_json::Error> {
    let mut s = Scanner {
        b: text.as_bytes(),
        i: 0,
    };
    s.ws();
    let is_object = s.peek() == Some(b'{');
    s.value(0)?;
    s.ws();
    if s.i != s.b.len() {
        return Err(s.err("trailing characters"));
    }
    Ok(is_object)
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn err(&self, what: &str) -> serde_json::Error {
        serde_json::Error::custom(format_args!("{what} at byte {}", self.i))
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8, what: &str) -> Result<(), serde_json::Error> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(what))
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), serde_json::Error> {
        self.ws();
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string(None),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("expected value")),
            None => Err(self.err("EOF while parsing a value")),
        }
    }

    fn nest(&self, depth: usize) -> Result<usize, serde_json::Error> {
        if depth >= MAX_DEPTH {
            return Err(self.err(&format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        Ok(depth + 1)
    }

    fn object(&mut self, depth: usize) -> Result<(), serde_json::Error> {
        let inner = self.nest(depth)?;
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        let mut keys = Keys::default();
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("key must be a string"));
            }
            let mut key = String::new();
            self.string(Some(&mut key))?;
            keys.admit::<serde_json::Error>(&key)?;
            self.eat(b':', "expected `:`")?;
            self.value(inner)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.err("expected `,` or `}`")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), serde_json::Error> {
        let inner = self.nest(depth)?;
        self.i += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.value(inner)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.err("expected `,` or `]`")),
            }
        }
    }

    /// A string at the opening quote; decoded into `out` when given (keys).
    fn string(&mut self, mut out: Option<&mut String>) -> Result<(), serde_json::Error> {
        self.i += 1;
        let mut run = self.i;
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("EOF while parsing a string"));
            };
            match c {
                b'"' => {
                    if let Some(o) = out.as_deref_mut() {
                        o.push_str(self.text(run, self.i));
                    }
                    self.i += 1;
                    return Ok(());
                }
                b'\\' => {
                    if let Some(o) = out.as_deref_mut() {
                        o.push_str(self.text(run, self.i));
                    }
                    self.i += 1;
                    let ch = self.escape()?;
                    if let Some(o) = out.as_deref_mut() {
                        o.push(ch);
                    }
                    run = self.i;
                }
                0x00..=0x1f => return Err(self.err("control character in a string")),
                _ => self.i += 1,
            }
        }
    }

    /// The source text between two byte offsets (both on character boundaries).
    fn text(&self, from: usize, to: usize) -> &str {
        std::str::from_utf8(&self.b[from..to]).expect("the document is UTF-8")
    }

    /// An escape after its backslash.
    fn escape(&mut self) -> Result<char, serde_json::Error> {
        let Some(c) = self.peek() else {
            return Err(self.err("EOF while parsing a string"));
        };
        self.i += 1;
        Ok(match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                match hi {
                    0xD800..=0xDBFF => {
                        if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                            return Err(self.err("lone leading surrogate in hex escape"));
                        }
                        self.i += 2;
                        let lo = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(self.err("lone leading surrogate in hex escape"));
                        }
                        let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                        char::from_u32(cp).expect("a surrogate pair is a scalar value")
                    }
                    0xDC00..=0xDFFF => return Err(self.err("unexpected trailing surrogate")),
                    cp => char::from_u32(cp).expect("not a surrogate"),
                }
            }
            _ => return Err(self.err("invalid escape")),
        })
    }

    fn hex4(&mut self) -> Result<u32, serde_json::Error> {
        let digits = self
            .b
            .get(self.i..self.i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|d| d.bytes().all(|c| c.is_ascii_hexdigit()))
            .ok_or_else(|| self.err("invalid \\u escape"))?;
        self.i += 4;
        Ok(u32::from_str_radix(digits, 16).expect("four hex digits"))
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), serde_json::Error> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("expected value"))
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, finite as an f64.
    fn number(&mut self) -> Result<(), serde_json::Error> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number"));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number"));
            }
            self.digits();
        }
        let n: f64 = self.text(start, self.i).parse().unwrap_or(f64::INFINITY);
        if !n.is_finite() {
            return Err(self.err("number out of range"));
        }
        Ok(())
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check;
    use crate::json::parse_strict_object;

    /// The scanner and the strict tree parser agree on every case.
    #[test]
    fn agrees_with_the_strict_parser() {
        let deep_ok = format!("{{\"a\":{}{}}}", "[".repeat(63), "]".repeat(63));
        let deep_bad = format!("{{\"a\":{}{}}}", "[".repeat(64), "]".repeat(64));
        let cases: Vec<String> = [
            "{}",
            "{ }",
            " {\"a\":1} ",
            "{\"a\":[1,2.5,-0,1e3,1E-3,true,false,null,\"x\"]}",
            "{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\"}",
            "{\"a\":{\"b\":{}}}",
            "{\"é\":1,\"e\":2}",
            "[]",
            "1",
            "\"x\"",
            "null",
            "{",
            "{}x",
            "{\"a\":1,}",
            "{,}",
            "[1,]",
            "{\"a\" 1}",
            "{a:1}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":-}",
            "{\"a\":1e}",
            "{\"a\":1e400}",
            "{\"a\":-1e400}",
            "{\"a\":tru}",
            "{\"a\":nul}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":\"\\ud800\"}",
            "{\"a\":\"\\udc00\"}",
            "{\"a\":\"\\ud800\\u0041\"}",
            "{\"a\":\"\t\"}",
            "{\"a\":1,\"a\":2}",
            "{\"a\":1,\"A\":2}",
            "{\"k\":1,\"\\u212a\":2}",
            "{\"s\":1,\"\u{17f}\":2}",
            "{\"a\\u0062\":1,\"ab\":2}",
            "{\"x\":[{\"a\":1,\"a\":2}]}",
            "{\"a\":\"unterminated}",
            "{\"a\":[1 2]}",
            "{\"a\":1}\n",
            "\n{\"a\":1}",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([deep_ok, deep_bad])
        .collect();
        for c in &cases {
            let tree = parse_strict_object(c.as_bytes()).is_ok();
            let scan = check(c).unwrap_or(false);
            let scan_ok = check(c).is_ok();
            // The tree parser also refuses non-objects; the scanner says what it saw.
            assert_eq!(
                tree,
                scan_ok && scan,
                "{c:?}: tree {tree}, scan {:?}",
                check(c)
            );
        }
    }
}
