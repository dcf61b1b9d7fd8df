//! The request mix of the audit test: per sandbox, each case is a request (or raw bytes
//! hyper rejects itself) and the record it must leave in the log.

use bridge_tests::native::chat;
use serde_json::{json, Value};

/// What one request must have left in the log.
#[derive(Debug, Clone)]
pub(super) struct Want {
    pub(super) what: &'static str,
    pub(super) sandbox: &'static str,
    /// From the response's `x-ollama-bridge-request-id` (none when hyper answered).
    pub(super) id: Option<String>,
    pub(super) method: &'static str,
    pub(super) path: &'static str,
    pub(super) endpoint: Option<&'static str>,
    pub(super) model: Option<&'static str>,
    pub(super) decision: &'static str,
    pub(super) reason: Option<&'static str>,
    pub(super) status: u16,
    pub(super) bytes_in: (u64, u64),
    pub(super) bytes_out: u64,
    pub(super) tokens: (Option<u64>, Option<u64>),
    pub(super) num_ctx: (Option<u64>, Option<u64>),
}

/// A request through the service.
pub(super) struct Http {
    pub(super) what: &'static str,
    pub(super) method: &'static str,
    pub(super) path: &'static str,
    pub(super) body: String,
    /// Is the body read (and counted in `bytes_in`) before the answer?
    pub(super) read: bool,
    pub(super) endpoint: Option<&'static str>,
    pub(super) model: Option<&'static str>,
    pub(super) decision: &'static str,
    pub(super) reason: Option<&'static str>,
    pub(super) status: u16,
    /// Does the answer carry Ollama's final chunk with token counts?
    pub(super) tokens: bool,
    pub(super) num_ctx: (Option<u64>, Option<u64>),
}

/// Raw bytes, for what hyper rejects itself.
pub(super) struct Raw {
    pub(super) what: &'static str,
    pub(super) bytes: Vec<u8>,
    pub(super) close_write: bool,
    pub(super) method: &'static str,
    pub(super) path: &'static str,
    pub(super) endpoint: Option<&'static str>,
    pub(super) reason: &'static str,
    /// What hyper answers (0: nothing); None: no record expected at all.
    pub(super) status: Option<u16>,
    pub(super) bytes_in: (u64, u64),
}

pub(super) enum Case {
    Http(Http),
    Raw(Raw),
}

#[allow(clippy::too_many_arguments)]
fn http(
    what: &'static str,
    method: &'static str,
    path: &'static str,
    body: Value,
    read: bool,
    endpoint: Option<&'static str>,
    model: Option<&'static str>,
    outcome: (&'static str, Option<&'static str>, u16),
    tokens: bool,
    num_ctx: (Option<u64>, Option<u64>),
) -> Case {
    let body = match body {
        Value::Null => String::new(),
        Value::String(s) => s,
        v => v.to_string(),
    };
    let (decision, reason, status) = outcome;
    Case::Http(Http {
        what,
        method,
        path,
        body,
        read,
        endpoint,
        model,
        decision,
        reason,
        status,
        tokens,
        num_ctx,
    })
}

fn raw(
    what: &'static str,
    bytes: &[u8],
    close_write: bool,
    line: (&'static str, &'static str, Option<&'static str>),
    status: Option<u16>,
    reason: &'static str,
) -> Case {
    Case::Raw(Raw {
        what,
        bytes: bytes.to_vec(),
        close_write,
        method: line.0,
        path: line.1,
        endpoint: line.2,
        reason,
        status,
        bytes_in: (bytes.len() as u64, bytes.len() as u64),
    })
}

const ALLOW_OK: (&str, Option<&str>, u16) = ("allow", None, 200);

pub(super) fn alpha_cases() -> Vec<Case> {
    let small = json!({"options": {"num_predict": 2}});
    let mut big_header = b"GET /api/tags HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big_header.extend(vec![b'a'; 300_000]);
    big_header.extend_from_slice(b"\r\n\r\n");
    let mut cases = vec![
        http("chat stream, num_ctx pinned", "POST", "/api/chat",
            chat("qwen2.5:7b", json!({"options": {"num_ctx": 2048, "num_predict": 2}})), true,
            Some("chat"), Some("qwen2.5:7b"), ALLOW_OK, true, (Some(2048), Some(8192))),
        http("chat stream:false", "POST", "/api/chat",
            chat("qwen2.5:7b", json!({"stream": false})), true,
            Some("chat"), Some("qwen2.5:7b"), ALLOW_OK, true, (None, Some(8192))),
        http("generate stream", "POST", "/api/generate",
            json!({"model": "llama3.2:3b", "prompt": "write", "options": {"num_predict": 2}}), true,
            Some("generate"), Some("llama3.2:3b"), ALLOW_OK, true, (None, None)),
        http("tags", "GET", "/api/tags", Value::Null, true,
            Some("list"), None, ALLOW_OK, false, (None, None)),
        http("HEAD tags", "HEAD", "/api/tags", Value::Null, true,
            Some("list"), None, ALLOW_OK, false, (None, None)),
        http("model denied", "POST", "/api/chat", chat("llama3.3:70b", small.clone()), true,
            Some("chat"), Some("llama3.3:70b"), ("deny", Some("model_not_allowed"), 403), false, (None, None)),
        http("endpoint denied", "POST", "/api/pull", json!({"model": "qwen2.5:7b"}), false,
            Some("manage"), None, ("deny", Some("endpoint_not_allowed"), 403), false, (None, None)),
        http("bad json", "POST", "/api/chat", json!("{bad"), true,
            Some("chat"), None, ("deny", Some("bad_request"), 400), false, (None, None)),
        http("unknown route", "GET", "/api/nope", Value::Null, true,
            None, None, ("deny", Some("not_found"), 404), false, (None, None)),
        http("Ollama 404", "POST", "/api/chat", chat("llama3.2:1b", json!({"stream": false})), true,
            Some("chat"), Some("llama3.2:1b"), ("allow", Some("upstream_error"), 404), false, (None, None)),
        http("Ollama error line mid-stream", "POST", "/api/chat",
            chat("qwen2.5:7b", json!({"messages": [{"role": "user", "content": "tell me a long story please"}]})), true,
            Some("chat"), Some("qwen2.5:7b"), ("allow", Some("upstream_error"), 200), false, (None, Some(8192))),
        raw("garbage request line", b"GARBAGE\r\n\r\n", false,
            ("-", "-", None), Some(400), "bad_request"),
        raw("conflicting Content-Length", b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", false,
            ("POST", "/api/chat", Some("chat")), Some(400), "bad_request"),
        raw("head cut off", b"POST /api/chat HTTP/1.1\r\nHost: x\r\n", true,
            ("POST", "/api/chat", Some("chat")), Some(0), "client_closed"),
        raw("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false,
            ("PRI", "*", None), Some(0), "bad_request"),
        raw("connection without a byte", b"", true, ("-", "-", None), None, "-"),
    ];
    let mut huge = raw(
        "headers too large",
        &big_header,
        false,
        ("GET", "/api/tags", Some("list")),
        Some(431),
        "too_large",
    );
    if let Case::Raw(r) = &mut huge {
        // hyper stops reading once its 64 KiB buffer is full.
        r.bytes_in = (64 * 1024, big_header.len() as u64);
    }
    cases.push(huge);
    cases
}

pub(super) fn beta_cases() -> Vec<Case> {
    vec![
        http(
            "beta chat stream",
            "POST",
            "/api/chat",
            chat("llama3.2:3b", json!({"options": {"num_predict": 2}})),
            true,
            Some("chat"),
            Some("llama3.2:3b"),
            ALLOW_OK,
            true,
            (None, None),
        ),
        http(
            "beta chat stream:false",
            "POST",
            "/api/chat",
            chat(
                "llama3.2:3b",
                json!({"stream": false, "options": {"num_ctx": 4096}}),
            ),
            true,
            Some("chat"),
            Some("llama3.2:3b"),
            ALLOW_OK,
            true,
            (Some(4096), Some(4096)),
        ),
        http(
            "beta generate denied",
            "POST",
            "/api/generate",
            json!({"model": "llama3.2:3b", "prompt": "x"}),
            false,
            Some("generate"),
            None,
            ("deny", Some("endpoint_not_allowed"), 403),
            false,
            (None, None),
        ),
        http(
            "beta model denied",
            "POST",
            "/api/chat",
            chat("qwen2.5:7b", json!({})),
            true,
            Some("chat"),
            Some("qwen2.5:7b"),
            ("deny", Some("model_not_allowed"), 403),
            false,
            (None, None),
        ),
        http(
            "beta tags",
            "GET",
            "/api/tags",
            Value::Null,
            true,
            Some("list"),
            None,
            ALLOW_OK,
            false,
            (None, None),
        ),
        raw(
            "beta garbage",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            false,
            ("-", "-", None),
            Some(400),
            "bad_request",
        ),
        raw(
            "beta head cut off",
            b"GET /api/tags HTTP/1.1\r\n",
            true,
            ("GET", "/api/tags", Some("list")),
            Some(0),
            "client_closed",
        ),
    ]
}
