//! What Ollama reads from a request's `options` and `keep_alive`: which option names are
//! sampling options (chosen per request) and which are runner options (fixed when the
//! model is loaded), and a `keep_alive` read exactly as Ollama's `api.Duration` reads it.
//!
//! Read from ollama/ollama v0.33.0-rc2 (commit fb30760996871fa9460115c753afd2c60d4ab0f7,
//! 2026-08-21): `api/types.go` (`Options`, `Runner`, `Options.FromMap`,
//! `Duration.UnmarshalJSON`), `server/sched.go` (`needsReload` compares `Options.Runner`:
//! a request whose runner options differ from the loaded model's reloads it), and Go's
//! `time.ParseDuration`.

use std::fmt;
use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

/// The Ollama release these names were read from.
pub const READ_FROM: &str = "ollama v0.33.0-rc2 (fb30760), api/types.go";

/// Sampling options: the fields of `api.Options` outside its embedded `api.Runner`. They
/// change how a loaded model samples, never how it is loaded.
pub const SAMPLING_OPTIONS: [&str; 13] = [
    "num_keep",
    "seed",
    "num_predict",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "repeat_last_n",
    "temperature",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "stop",
];

/// The JSON type `Options.FromMap` accepts for an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionType {
    /// A Go `int` (or `*int`): a JSON number, truncated.
    Integer,
    /// A Go `*bool`: `true` or `false`.
    Boolean,
}

/// Runner options: the fields of `api.Runner`, which decide how the model is loaded.
pub const RUNNER_OPTIONS: [(&str, OptionType); 7] = [
    ("num_ctx", OptionType::Integer),
    ("num_batch", OptionType::Integer),
    ("num_gpu", OptionType::Integer),
    ("main_gpu", OptionType::Integer),
    ("use_mmap", OptionType::Boolean),
    ("num_thread", OptionType::Integer),
    ("draft_num_predict", OptionType::Integer),
];

/// Is `key` (exactly: Ollama reads option keys case-sensitively) a sampling option?
pub fn is_sampling_option(key: &str) -> bool {
    SAMPLING_OPTIONS.contains(&key)
}

/// The type of the runner option `key`, if it is one.
pub fn runner_option(key: &str) -> Option<OptionType> {
    RUNNER_OPTIONS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|&(_, t)| t)
}

/// How long Ollama keeps a model loaded after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// A negative value: until Ollama stops (it stores `math.MaxInt64`).
    Forever,
    /// This long; zero unloads the model as soon as the request ends.
    For(Duration),
}

/// The longest duration Go can hold (`time.Duration` is an `int64` of nanoseconds).
pub const GO_DURATION_MAX: Duration = Duration::from_nanos(i64::MAX as u64);

/// A `keep_alive` Ollama would refuse (400).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeepAliveError {
    #[error("keep_alive must be a number of seconds or a duration string, not {0}")]
    Type(&'static str),
    #[error("keep_alive: {0}")]
    Duration(#[from] GoDurationError),
}

impl KeepAlive {
    /// Reads a request's `keep_alive` as `api.Duration.UnmarshalJSON` does: `null` is
    /// not set (Go leaves the pointer nil); a number is seconds (a float, negative =
    /// forever); a string is a Go duration (`"5m"`, `"1h30m"`, negative = forever);
    /// anything else is refused.
    pub fn from_json(v: &Value) -> Result<Option<KeepAlive>, KeepAliveError> {
        match v {
            Value::Null => Ok(None),
            Value::Number(n) => Ok(Some(KeepAlive::from_seconds(
                n.as_f64().unwrap_or(f64::INFINITY),
            ))),
            Value::String(s) => KeepAlive::parse(s).map(Some),
            Value::Bool(_) => Err(KeepAliveError::Type("a boolean")),
            Value::Array(_) => Err(KeepAliveError::Type("an array")),
            Value::Object(_) => Err(KeepAliveError::Type("an object")),
        }
    }

    /// A number of seconds: `time.Duration(t * float64(time.Second))`, negative = forever.
    /// Beyond Go's range the product does not fit an int64 (Go's conversion is then
    /// platform-dependent); it is read as the longest duration.
    pub fn from_seconds(t: f64) -> KeepAlive {
        if t < 0.0 {
            return KeepAlive::Forever;
        }
        let ns = t * 1e9;
        if ns.is_nan() || ns >= GO_DURATION_MAX.as_nanos() as f64 {
            KeepAlive::For(GO_DURATION_MAX)
        } else {
            // `as` truncates toward zero, as Go's float-to-int conversion does.
            KeepAlive::For(Duration::from_nanos(ns as u64))
        }
    }

    /// A Go duration string (`time.ParseDuration`), negative = forever.
    pub fn parse(s: &str) -> Result<KeepAlive, KeepAliveError> {
        let ns = parse_go_duration(s)?;
        Ok(if ns < 0 {
            KeepAlive::Forever
        } else {
            KeepAlive::For(Duration::from_nanos(ns as u64))
        })
    }

    /// Does it keep the model loaded for a while (neither zero nor forever)?
    pub fn positive(self) -> Option<Duration> {
        match self {
            KeepAlive::For(d) if !d.is_zero() => Some(d),
            _ => None,
        }
    }

    /// The value to send: `-1` for forever, else a Go duration string.
    pub fn to_json(self) -> Value {
        match self {
            KeepAlive::Forever => Value::from(-1),
            KeepAlive::For(d) => Value::String(go_duration_string(d)),
        }
    }
}

impl fmt::Display for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepAlive::Forever => f.write_str("-1"),
            KeepAlive::For(d) => f.write_str(&go_duration_string(*d)),
        }
    }
}

/// A duration as a string `time.ParseDuration` reads back exactly: its nonzero parts in
/// `h`, `m`, `s`, `ms`, `us`, `ns` (`"1h30m"`, `"1s500ms"`), `"0s"` for zero.
pub fn go_duration_string(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let secs = d.as_secs();
    let nanos = u64::from(d.subsec_nanos());
    let parts = [
        (secs / 3600, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
        (nanos / 1_000_000, "ms"),
        (nanos / 1_000 % 1_000, "us"),
        (nanos % 1_000, "ns"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect()
}

/// Why Go's `time.ParseDuration` refuses a string.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GoDurationError {
    #[error("invalid duration {0:?}")]
    Invalid(String),
    #[error("missing unit in duration {0:?}")]
    MissingUnit(String),
    #[error("unknown unit {unit:?} in duration {orig:?}")]
    UnknownUnit { unit: String, orig: String },
}

/// Go's `time.ParseDuration`, transliterated: a possibly signed sequence of decimal
/// numbers, each with an optional fraction and a unit (`ns`, `us`/`µs`/`μs`, `ms`, `s`,
/// `m`, `h`), e.g. `"300ms"`, `"-1.5h"`, `"2h45m"`; `"0"` alone needs no unit. Returns
/// nanoseconds; its overflow checks (and its one wrap-around) are Go's.
pub fn parse_go_duration(orig: &str) -> Result<i64, GoDurationError> {
    let invalid = || GoDurationError::Invalid(orig.to_owned());
    let mut s = orig.as_bytes();
    let mut neg = false;
    if let Some(&c @ (b'-' | b'+')) = s.first() {
        neg = c == b'-';
        s = &s[1..];
    }
    if s == b"0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut d: u64 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return Err(invalid());
        }
        let before = s.len();
        let (mut v, rest) = leading_int(s).ok_or_else(invalid)?;
        s = rest;
        let pre = before != s.len();
        let (mut f, mut scale, mut post) = (0u64, 1f64, false);
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let before = s.len();
            let (x, sc, rest) = leading_fraction(s);
            (f, scale, s) = (x, sc, rest);
            post = before != s.len();
        }
        if !pre && !post {
            return Err(invalid());
        }
        let i = s
            .iter()
            .position(|&c| c == b'.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if i == 0 {
            return Err(GoDurationError::MissingUnit(orig.to_owned()));
        }
        let (u, rest) = s.split_at(i);
        s = rest;
        let unit: u64 = match u {
            b"ns" => 1,
            b"us" => 1_000,
            // U+00B5 (micro sign) and U+03BC (Greek mu), in UTF-8.
            [0xC2, 0xB5, b's'] | [0xCE, 0xBC, b's'] => 1_000,
            b"ms" => 1_000_000,
            b"s" => 1_000_000_000,
            b"m" => 60_000_000_000,
            b"h" => 3_600_000_000_000,
            _ => {
                return Err(GoDurationError::UnknownUnit {
                    unit: String::from_utf8_lossy(u).into_owned(),
                    orig: orig.to_owned(),
                })
            }
        };
        if v > (1u64 << 63) / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            // Go: uint64(float64(f) * (float64(unit) / scale)); at most 3.6e12.
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > 1 << 63 {
                return Err(invalid());
            }
        }
        // Go's uint64 addition wraps (2^63 + 2^63 is 0); so does this one.
        d = d.wrapping_add(v);
        if d > 1 << 63 {
            return Err(invalid());
        }
    }
    if neg {
        return Ok((d as i64).wrapping_neg());
    }
    if d > i64::MAX as u64 {
        return Err(invalid());
    }
    Ok(d as i64)
}

/// Go's `leadingInt`: the leading digits, `None` past 2^63.
fn leading_int(s: &[u8]) -> Option<(u64, &[u8])> {
    let mut x: u64 = 0;
    let mut i = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        if x > (1 << 63) / 10 {
            return None;
        }
        x = x * 10 + u64::from(s[i] - b'0');
        if x > 1 << 63 {
            return None;
        }
        i += 1;
    }
    Some((x, &s[i..]))
}

/// Go's `leadingFraction`: the leading digits and their scale, precision dropped (not
/// refused) past 2^63.
fn leading_fraction(s: &[u8]) -> (u64, f64, &[u8]) {
    let (mut x, mut scale, mut overflow) = (0u64, 1f64, false);
    let mut i = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        let c = u64::from(s[i] - b'0');
        i += 1;
        if overflow {
            continue;
        }
        if x > ((1 << 63) - 1) / 10 {
            overflow = true;
            continue;
        }
        let y = x * 10 + c;
        if y > 1 << 63 {
            overflow = true;
            continue;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale, &s[i..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SEC: i64 = 1_000_000_000;

    #[test]
    fn go_durations_read_as_go_reads_them() {
        for (s, ns) in [
            ("0", 0),
            ("-0", 0),
            ("+0", 0),
            ("0s", 0),
            ("-0s", 0),
            ("5m", 300 * SEC),
            ("1h30m", 5400 * SEC),
            ("1.5h", 5400 * SEC),
            ("+5s", 5 * SEC),
            ("-1s", -SEC),
            ("-1.5h", -5400 * SEC),
            ("300ms", 300_000_000),
            ("1us", 1_000),
            ("1µs", 1_000),
            ("1μs", 1_000),
            ("1ns", 1),
            (".5s", 500_000_000),
            ("5.s", 5 * SEC),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
            ("0.1ns", 0),
            ("9223372036854775807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("2562047h47m16.854775807s", i64::MAX),
            // Go wraps 2^63 + 2^63 to 0 (and then accepts it).
            ("9223372036854775808ns9223372036854775808ns", 0),
            ("1.00000000000000000000000000001s", SEC),
        ] {
            assert_eq!(parse_go_duration(s), Ok(ns), "{s}");
        }
        for s in [
            "",
            "-",
            "+",
            "5",
            "1.5",
            "s",
            ".s",
            "-.s",
            "5 m",
            " 5m",
            "5m ",
            "1d",
            "5M",
            "1e3s",
            "1hh",
            "--5m",
            "9223372036854775808ns",
            "2562048h",
            "9999999999999999999ns",
            "forever",
        ] {
            assert!(parse_go_duration(s).is_err(), "{s} parses");
        }
        assert_eq!(
            parse_go_duration("5").unwrap_err(),
            GoDurationError::MissingUnit("5".into())
        );
    }

    #[test]
    fn keep_alive_as_ollama_unmarshals_it() {
        let read = |v: Value| KeepAlive::from_json(&v);
        let secs = |n: u64| Ok(Some(KeepAlive::For(Duration::from_secs(n))));
        assert_eq!(read(json!(null)), Ok(None));
        assert_eq!(read(json!(300)), secs(300));
        assert_eq!(
            read(json!(1.5)),
            Ok(Some(KeepAlive::For(Duration::from_millis(1500))))
        );
        assert_eq!(read(json!("5m")), secs(300));
        assert_eq!(read(json!(0)), secs(0));
        assert_eq!(read(json!(-0.0)), secs(0));
        assert_eq!(read(json!(1e-10)), secs(0), "0.1ns truncates to zero");
        assert_eq!(read(json!("0")), secs(0));
        assert_eq!(read(json!(-1)), Ok(Some(KeepAlive::Forever)));
        assert_eq!(read(json!(-0.5)), Ok(Some(KeepAlive::Forever)));
        assert_eq!(read(json!("-1m")), Ok(Some(KeepAlive::Forever)));
        assert_eq!(read(json!(1e30)), Ok(Some(KeepAlive::For(GO_DURATION_MAX))));
        assert_eq!(read(json!(true)), Err(KeepAliveError::Type("a boolean")));
        assert!(read(json!({})).is_err() && read(json!([])).is_err());
        assert!(matches!(read(json!("5")), Err(KeepAliveError::Duration(_))));
    }

    #[test]
    fn sent_values_read_back_exactly() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(1500),
            Duration::from_secs(1800),
            Duration::from_secs(5400),
            Duration::from_nanos(3_723_004_005_006),
            GO_DURATION_MAX,
        ] {
            let k = KeepAlive::For(d);
            let s = k.to_json();
            assert_eq!(KeepAlive::from_json(&s), Ok(Some(k)), "{s}");
            assert_eq!(k.to_string(), s.as_str().unwrap());
        }
        assert_eq!(KeepAlive::For(Duration::from_secs(1800)).to_string(), "30m");
        assert_eq!(
            KeepAlive::For(Duration::from_secs(5400)).to_string(),
            "1h30m"
        );
        assert_eq!(KeepAlive::Forever.to_json(), json!(-1));
        assert_eq!(
            KeepAlive::from_json(&KeepAlive::Forever.to_json()),
            Ok(Some(KeepAlive::Forever))
        );
    }

    #[test]
    fn option_classes() {
        assert!(is_sampling_option("temperature") && is_sampling_option("stop"));
        assert!(!is_sampling_option("Temperature"), "keys are exact");
        assert!(!is_sampling_option("num_gpu") && !is_sampling_option("mirostat"));
        assert_eq!(runner_option("use_mmap"), Some(OptionType::Boolean));
        assert_eq!(runner_option("num_batch"), Some(OptionType::Integer));
        assert_eq!(runner_option("temperature"), None);
        for (k, _) in RUNNER_OPTIONS {
            assert!(!is_sampling_option(k), "{k} in both classes");
        }
    }
}
