//! Llama 3.2's pythonic calls: `[get_weather(city="Paris"), get_time(tz='UTC')]`.
//! Keyword arguments only; values are Python literals (strings, numbers, `True`,
//! `False`, `None`, lists, dicts with string keys), read as JSON values.

use serde_json::{Map, Number, Value};

use super::call::{Call, Stop};
use super::tools::Tools;

/// A parser over the text; `pos` is a byte offset.
pub(super) struct Py<'a> {
    s: &'a str,
    tools: &'a Tools,
    pub(super) pos: usize,
}

/// How deep lists and dicts may nest.
const MAX_DEPTH: usize = 64;

impl<'a> Py<'a> {
    pub(super) fn new(s: &'a str, pos: usize, tools: &'a Tools) -> Self {
        Py { s, tools, pos }
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    /// The next non-blank byte (EOF is `Stop::More`).
    fn next_byte(&mut self) -> Result<u8, Stop> {
        self.ws();
        self.peek().ok_or(Stop::More)
    }

    fn expect(&mut self, b: u8) -> Result<(), Stop> {
        if self.next_byte()? != b {
            return Err(Stop::No);
        }
        self.pos += 1;
        Ok(())
    }

    /// `[call, call, ...]`, from the `[`: each call's name and arguments.
    pub(super) fn list(&mut self) -> Result<Vec<Call>, Stop> {
        self.expect(b'[')?;
        let mut calls = Vec::new();
        loop {
            calls.push(self.call()?);
            match self.next_byte()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Ok(calls);
                }
                _ => return Err(Stop::No),
            }
        }
    }

    fn ident(&mut self) -> Result<&'a str, Stop> {
        self.ws();
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        {
            self.pos += 1;
        }
        if self.pos == self.s.len() {
            return Err(Stop::More);
        }
        let id = &self.s[start..self.pos];
        if id.is_empty() || id.as_bytes()[0].is_ascii_digit() {
            return Err(Stop::No);
        }
        Ok(id)
    }

    fn call(&mut self) -> Result<Call, Stop> {
        let start = self.pos;
        let name = match self.ident() {
            // `[see` is prose unless some offered tool's name begins so.
            Err(Stop::More) if !self.tools.named_from(self.s[start..].trim_start()) => {
                return Err(Stop::No)
            }
            r => r?.to_owned(),
        };
        if !self.tools.offers(&name) {
            return Err(Stop::No);
        }
        self.expect(b'(')?;
        let mut args = Map::new();
        loop {
            if self.next_byte()? == b')' {
                self.pos += 1;
                return Ok(Call {
                    name,
                    arguments: args,
                });
            }
            let key = self.ident()?.to_owned();
            self.expect(b'=')?;
            let v = self.value(0)?;
            if args.insert(key, v).is_some() {
                return Err(Stop::No);
            }
            match self.next_byte()? {
                b',' => self.pos += 1,
                b')' => {}
                _ => return Err(Stop::No),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, Stop> {
        if depth > MAX_DEPTH {
            return Err(Stop::No);
        }
        match self.next_byte()? {
            q @ (b'"' | b'\'') => self.string(q).map(Value::String),
            b'[' => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    if self.next_byte()? == b']' {
                        self.pos += 1;
                        return Ok(Value::Array(items));
                    }
                    items.push(self.value(depth + 1)?);
                    match self.next_byte()? {
                        b',' => self.pos += 1,
                        b']' => {}
                        _ => return Err(Stop::No),
                    }
                }
            }
            b'{' => {
                self.pos += 1;
                let mut m = Map::new();
                loop {
                    let b = self.next_byte()?;
                    if b == b'}' {
                        self.pos += 1;
                        return Ok(Value::Object(m));
                    }
                    if b != b'"' && b != b'\'' {
                        return Err(Stop::No);
                    }
                    let k = self.string(b)?;
                    self.expect(b':')?;
                    let v = self.value(depth + 1)?;
                    m.insert(k, v);
                    match self.next_byte()? {
                        b',' => self.pos += 1,
                        b'}' => {}
                        _ => return Err(Stop::No),
                    }
                }
            }
            _ => self.word(),
        }
    }

    /// A number or `True`/`False`/`None` (JSON's spellings too).
    fn word(&mut self) -> Result<Value, Stop> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'))
        {
            self.pos += 1;
        }
        if self.pos == self.s.len() {
            return Err(Stop::More);
        }
        let w = &self.s[start..self.pos];
        Ok(match w {
            "True" | "true" => Value::Bool(true),
            "False" | "false" => Value::Bool(false),
            "None" | "null" => Value::Null,
            _ => {
                if let Ok(i) = w.parse::<i64>() {
                    Value::Number(i.into())
                } else {
                    let f: f64 = w.parse().map_err(|_| Stop::No)?;
                    Value::Number(Number::from_f64(f).ok_or(Stop::No)?)
                }
            }
        })
    }

    /// A quoted string from its opening quote, with Python's common escapes.
    fn string(&mut self, q: u8) -> Result<String, Stop> {
        self.pos += 1;
        let mut out = String::new();
        let rest = &self.s[self.pos..];
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                c if c as u32 == q as u32 => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => {
                    let Some((_, e)) = chars.next() else {
                        return Err(Stop::More);
                    };
                    out.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '0' => '\0',
                        '\\' | '\'' | '"' => e,
                        _ => return Err(Stop::No),
                    });
                }
                '\n' => return Err(Stop::No),
                c => out.push(c),
            }
        }
        Err(Stop::More)
    }
}
