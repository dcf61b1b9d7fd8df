//! What checking a configuration found, placed on lines: reading the TOML so that every
//! error in it is reported (not only the first serde meets), the errors and warnings of
//! the validators, each on the line of the key it is about.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use super::raw::RawConfig;
use super::{ConfigError, ConfigErrors};

/// A byte range of the configuration text.
pub(super) type Span = Range<usize>;

/// At most this many errors are collected from the TOML itself.
const MAX_TOML_ERRORS: usize = 50;

/// The line (from 1) of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The key a line assigns (`key = ...`, also `"key" = ...` and `a.b = ...`'s `a`).
fn assigned_key(line: &str) -> Option<&str> {
    let (k, _) = line.split_once('=')?;
    let k = k.trim().trim_matches('"');
    let k = k.split('.').next()?.trim();
    let ok = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    ok.then_some(k)
}

fn is_header(line: &str) -> bool {
    line.trim_start().starts_with('[')
}

/// The errors and warnings found so far, each placed on a line.
pub(super) struct Found<'t> {
    /// The text, with the entries serde refused blanked out (the lines stay).
    text: Cow<'t, str>,
    errs: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    /// A whole table had to be left out of the TOML (so "none configured" is not news).
    pub(super) dropped_table: bool,
}

impl<'t> Found<'t> {
    pub(super) fn new(text: &'t str) -> Self {
        Found {
            text: Cow::Borrowed(text),
            errs: Vec::new(),
            warnings: Vec::new(),
            dropped_table: false,
        }
    }

    pub(super) fn push(&mut self, span: Option<Span>, message: String) {
        let line = span.map(|s| line_of(&self.text, s.start));
        self.errs.push(ConfigError { line, message });
    }

    fn push_line(&mut self, line: Option<usize>, message: String, warning: bool) {
        let e = ConfigError { line, message };
        if warning {
            self.warnings.push(e);
        } else {
            self.errs.push(e);
        }
    }

    /// The line of `key = ...` in the table whose header (or first key) is at `start`;
    /// `None` when the table does not set it.
    fn key_line(&self, start: usize, key: &str) -> Option<usize> {
        let first = line_of(&self.text, start);
        for (i, line) in self.text.lines().enumerate().skip(first - 1) {
            if i + 1 > first && is_header(line) {
                break;
            }
            if assigned_key(line) == Some(key) {
                return Some(i + 1);
            }
        }
        None
    }

    /// The line of `key = ...` in the `[section]` table.
    pub(super) fn section_key_line(&self, section: &str, key: &str) -> Option<usize> {
        let header = format!("[{section}]");
        let mut offset = 0;
        for line in self.text.split_inclusive('\n') {
            if line.trim_start().starts_with(&header) {
                return self.key_line(offset, key);
            }
            offset += line.len();
        }
        None
    }

    /// An error about `key` of the `[section]` table.
    pub(super) fn section_err(&mut self, section: &str, key: &str, message: String) {
        let line = self.section_key_line(section, key);
        self.push_line(line, message, false);
    }

    /// The errors, or the warnings when there is none.
    pub(super) fn finish(self) -> Result<Vec<ConfigError>, ConfigErrors> {
        if self.errs.is_empty() {
            Ok(self.warnings)
        } else {
            Err(ConfigErrors(self.errs))
        }
    }

    /// The TOML, deserialised into the raw types. A syntax error is the only error
    /// reported; otherwise each key serde refuses (unknown, of the wrong type, a bad
    /// value) is reported on its line and left out, and the rest is read again, so the
    /// validators still check everything else. `None` when nothing could be read.
    pub(super) fn read_toml(&mut self) -> Option<RawConfig> {
        let one = |e: toml::de::Error, text: &str| ConfigError {
            line: e.span().map(|s| line_of(text, s.start)),
            message: e.message().trim().to_owned(),
        };
        if let Err(e) = toml::from_str::<toml::Table>(&self.text) {
            self.errs.push(one(e, &self.text));
            return None;
        }
        let mut text = self.text.to_string();
        let mut left_out: Vec<String> = Vec::new();
        for _ in 0..MAX_TOML_ERRORS {
            let e = match toml::from_str::<RawConfig>(&text) {
                Ok(raw) => {
                    // Spans of what was read are offsets in this text.
                    self.text = Cow::Owned(text);
                    return Some(raw);
                }
                Err(e) => e,
            };
            let Some(span) = e.span() else {
                self.errs.push(one(e, &text));
                return None;
            };
            // A required key left out for its own error is not reported again.
            let msg = e.message().trim();
            let echo = msg.starts_with("missing field")
                && left_out.iter().any(|k| msg.contains(&format!("`{k}`")));
            if !echo {
                self.errs.push(one(e, &text));
            }
            let line = line_of(&text, span.start);
            match leave_out(&mut text, line) {
                Some(Some(key)) => left_out.push(key),
                Some(None) => self.dropped_table = true,
                None => return None,
            }
        }
        None
    }
}

/// Blanks (keeping the line count) the entry on `line`: from the `key =` line it
/// belongs to up to the next key or table; on a table header, the whole table. Returns
/// the key left out (`None` for a table), or `None` when there was nothing to blank.
fn leave_out(text: &mut String, line: usize) -> Option<Option<String>> {
    let lines: Vec<&str> = text.split('\n').collect();
    let at = line.checked_sub(1)?;
    let (start, key) = if is_header(lines.get(at)?) {
        (at, None)
    } else {
        let k = (0..=at)
            .rev()
            .find(|&i| assigned_key(lines[i]).is_some() || is_header(lines[i]))?;
        if is_header(lines[k]) {
            return None;
        }
        (k, assigned_key(lines[k]).map(str::to_owned))
    };
    let end = (start + 1..lines.len())
        .find(|&i| is_header(lines[i]) || (key.is_some() && assigned_key(lines[i]).is_some()))
        .unwrap_or(lines.len());
    if lines[start..end].iter().all(|l| l.trim().is_empty()) {
        return None;
    }
    let blanked: Vec<&str> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| if (start..end).contains(&i) { "" } else { *l })
        .collect();
    *text = blanked.join("\n");
    Some(key)
}

/// The errors of one `[[sandbox]]` or `[model]` table: each is prefixed with the table's
/// name and placed on the line of the first key of the table it names, else on the
/// table's own line.
pub(super) struct Table<'f, 't> {
    pub(super) found: &'f mut Found<'t>,
    pub(super) span: Span,
    pub(super) ctx: String,
}

impl Table<'_, '_> {
    fn place(&mut self, message: &dyn fmt::Display, warning: bool) {
        let message = message.to_string();
        let start = self.span.start;
        let line = message
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .find_map(|w| self.found.key_line(start, w))
            .or_else(|| Some(line_of(&self.found.text, start)));
        let message = format!("{}: {message}", self.ctx);
        self.found.push_line(line, message, warning);
    }

    pub(super) fn err(&mut self, message: impl fmt::Display) {
        self.place(&message, false);
    }

    /// A value that is allowed but surely not what was meant.
    pub(super) fn warn(&mut self, message: impl fmt::Display) {
        self.place(&message, true);
    }
}
