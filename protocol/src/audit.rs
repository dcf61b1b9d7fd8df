//! The audit record (the README's reference): one JSON object per line, one line per request.
//! This type is the schema; a round-trip test pins its field names.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Reason;
use crate::route::EndpointClass;

/// Who is on the other end of a listener, as the host sees it (never as the sandbox says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Peer {
    /// `SO_PEERCRED` of a unix socket peer.
    Unix {
        uid: u32,
        gid: u32,
        pid: Option<i32>,
    },
    /// The peer CID of a vsock connection.
    Vsock { cid: u32 },
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
}

/// One request's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// RFC 3339 UTC time the request arrived.
    pub ts: String,
    pub request_id: String,
    pub sandbox: String,
    pub peer: Option<Peer>,
    pub method: String,
    pub path: String,
    /// Endpoint class, or null when the route is unknown.
    pub endpoint: Option<Endpoint>,
    /// Canonical model name (shortest form, e.g. `qwen2.5:7b`), or null.
    pub model: Option<String>,
    pub decision: Decision,
    /// Null, or a snake_case code such as `model_not_allowed`.
    pub reason: Option<Reason>,
    pub num_ctx_requested: Option<u64>,
    pub num_ctx_sent: Option<u64>,
    /// Keys the bridge removed from the request's `options` (runner and unknown options).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options_removed: Vec<String>,
    /// The sandbox's `keep_alive` as it came (a string as written, else its JSON text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive_requested: Option<String>,
    /// The `keep_alive` sent to Ollama (a Go duration, `-1` for forever), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive_sent: Option<String>,
    /// Tool calls the bridge recovered from the reply's text (tool-call salvage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls_salvaged: Option<u64>,
    /// The status actually sent to the client.
    pub status: u16,
    /// Ollama's status, when the bridge had already sent the client its own headers
    /// (early headers of a streamed request waiting for a model load): `status` is then
    /// the 200 sent, and an error of Ollama's went into the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    /// How long a model request waited in the upstream's fair queue (0: a slot was
    /// free); absent for requests that never queue (listings, version, refusals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_ms: Option<u64>,
    /// The upstream server the request went to (its `name`; `default` with a single
    /// `url`); absent when nothing went upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: u64,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Tokens charged to the sandbox's budget as an estimate, because the answer ended
    /// before Ollama's counts (the README's "Token budgets"); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_estimated: Option<u64>,
    /// Only with `log_prompts = true`: the request body as forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<serde_json::Value>,
    /// Only with `log_prompts = true`: the assistant output (text assembled from the
    /// answer, at most [`OUTPUT_LIMIT`] bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Only with `log_prompts = true`: the output was longer than what was recorded.
    #[serde(default, skip_serializing_if = "is_false")]
    pub output_truncated: bool,
}

impl AuditRecord {
    /// The record of a request that arrived at `unix_ms`: nothing decided yet (a denial
    /// until the policy allows it), nothing measured.
    pub fn new(
        unix_ms: u64,
        request_id: String,
        sandbox: String,
        peer: Option<Peer>,
        method: String,
        path: String,
    ) -> AuditRecord {
        AuditRecord {
            ts: rfc3339_millis(unix_ms),
            request_id,
            sandbox,
            peer,
            method,
            path,
            endpoint: None,
            model: None,
            decision: Decision::Deny,
            reason: None,
            num_ctx_requested: None,
            num_ctx_sent: None,
            options_removed: Vec::new(),
            keep_alive_requested: None,
            keep_alive_sent: None,
            tool_calls_salvaged: None,
            status: 0,
            upstream_status: None,
            queued_ms: None,
            upstream: None,
            bytes_in: 0,
            bytes_out: 0,
            duration_ms: 0,
            prompt_tokens: None,
            completion_tokens: None,
            tokens_estimated: None,
            prompt: None,
            output: None,
            output_truncated: false,
        }
    }
}

/// A record's `endpoint`: a class of the endpoint table, or `bridge` for the bridge's own
/// status endpoint. Written as the class's config name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Class(EndpointClass),
    /// `/_bridge/status`, answered by the bridge itself.
    Bridge,
}

impl Endpoint {
    /// The name as written in the audit log and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Class(c) => c.as_str(),
            Endpoint::Bridge => "bridge",
        }
    }

    /// The endpoint with this name.
    pub fn parse(s: &str) -> Option<Endpoint> {
        if s == "bridge" {
            return Some(Endpoint::Bridge);
        }
        EndpointClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .map(Endpoint::Class)
    }
}

impl From<EndpointClass> for Endpoint {
    fn from(c: EndpointClass) -> Endpoint {
        Endpoint::Class(c)
    }
}

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Endpoint, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Endpoint::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown endpoint class {s:?}")))
    }
}

/// Most bytes of assistant output recorded with `log_prompts = true`.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// The method and path recorded when the request line could not be read.
pub const UNKNOWN: &str = "-";

fn is_false(b: &bool) -> bool {
    !*b
}

/// Formats a UNIX time in milliseconds as RFC 3339 UTC (`2026-11-21T14:03:07.123Z`).
pub fn rfc3339_millis(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let ms = unix_ms % 1000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses an RFC 3339 timestamp (`Z` or `±hh:mm` offset, optional fraction) into UNIX ms.
pub fn parse_rfc3339_millis(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let digits = &frac[..n.min(3)];
        ms = digits.parse::<i64>().ok()? * 10i64.pow(3 - digits.len() as u32);
        rest = &frac[n..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let v = o[1..3].parse::<i64>().ok()? * 60 + o[4..6].parse::<i64>().ok()?;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) - offset_min * 60) * 1000 + ms)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formatting() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_795_356_187_123),
            "2026-11-22T14:03:07.123Z"
        );
        for ms in [0u64, 951_782_400_000, 1_795_356_187_123, 4_107_542_400_999] {
            assert_eq!(parse_rfc3339_millis(&rfc3339_millis(ms)), Some(ms as i64));
        }
        assert_eq!(
            parse_rfc3339_millis("2026-11-22T15:03:07+01:00"),
            Some(1_795_356_187_000)
        );
        assert_eq!(parse_rfc3339_millis("2026-11-22"), None);
        assert_eq!(parse_rfc3339_millis("2026-13-22T00:00:00Z"), None);
    }

    #[test]
    fn schema_round_trip() {
        let line = r#"{"ts":"2026-11-21T14:03:07.123Z","request_id":"r1","sandbox":"automation","peer":{"uid":1000,"gid":1000,"pid":42},"method":"POST","path":"/api/chat","endpoint":"chat","model":"qwen2.5:7b","decision":"allow","reason":null,"num_ctx_requested":null,"num_ctx_sent":32768,"status":200,"bytes_in":120,"bytes_out":900,"duration_ms":15,"prompt_tokens":26,"completion_tokens":290}"#;
        let r: AuditRecord = serde_json::from_str(line).unwrap();
        assert_eq!(
            r.peer,
            Some(Peer::Unix {
                uid: 1000,
                gid: 1000,
                pid: Some(42)
            })
        );
        assert_eq!(serde_json::to_string(&r).unwrap(), line);
        let v: AuditRecord = serde_json::from_str(
            &line.replace(r#"{"uid":1000,"gid":1000,"pid":42}"#, r#"{"cid":3}"#),
        )
        .unwrap();
        assert_eq!(v.peer, Some(Peer::Vsock { cid: 3 }));
        // The opt-in fields appear only when set.
        let mut p = r.clone();
        p.prompt = Some(serde_json::json!({"model": "qwen2.5:7b"}));
        p.output = Some("hi".into());
        p.output_truncated = true;
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.ends_with(
            r#""completion_tokens":290,"prompt":{"model":"qwen2.5:7b"},"output":"hi","output_truncated":true}"#
        ));
        assert_eq!(serde_json::from_str::<AuditRecord>(&text).unwrap(), p);
        // So do the load policy's, after num_ctx_sent.
        let mut o = r.clone();
        o.options_removed = vec!["num_gpu".into(), "num_batch".into()];
        o.keep_alive_requested = Some("-1".into());
        o.keep_alive_sent = Some("30m".into());
        o.tool_calls_salvaged = Some(2);
        let text = serde_json::to_string(&o).unwrap();
        assert!(text.contains(
            r#""num_ctx_sent":32768,"options_removed":["num_gpu","num_batch"],"keep_alive_requested":"-1","keep_alive_sent":"30m","tool_calls_salvaged":2,"status":200"#
        ), "{text}");
        assert_eq!(serde_json::from_str::<AuditRecord>(&text).unwrap(), o);
        // Ollama's status after early headers, right after the status sent.
        let mut u = r.clone();
        u.upstream_status = Some(404);
        let text = serde_json::to_string(&u).unwrap();
        assert!(
            text.contains(r#""status":200,"upstream_status":404,"bytes_in":120"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<AuditRecord>(&text).unwrap(), u);
    }

    #[test]
    fn endpoints_and_reasons_are_written_by_name() {
        let mut r = AuditRecord::new(0, "r".into(), "s".into(), None, "GET".into(), "/".into());
        r.endpoint = Some(Endpoint::Bridge);
        r.reason = Some(Reason::UpstreamUnreachable);
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""endpoint":"bridge""#), "{text}");
        assert!(
            text.contains(r#""reason":"upstream_unreachable""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<AuditRecord>(&text).unwrap(), r);
        for c in EndpointClass::ALL {
            let e = Endpoint::from(c);
            let j = serde_json::to_string(&e).unwrap();
            assert_eq!(j, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<Endpoint>(&j).unwrap(), e);
        }
        assert!(serde_json::from_str::<Endpoint>(r#""nope""#).is_err());
    }
}
