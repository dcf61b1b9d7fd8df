//! The gate before anything goes upstream: parse the request, check peer, rate, headers,
//! route, endpoint and body size, decide the policy, rewrite num_ctx, options and
//! keep_alive, and take a slot.

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request};
use hyper::body::Incoming;
use protocol::audit::{AuditRecord, Endpoint};
use protocol::body::CheckedBody;
use protocol::error::{BridgeError, Reason};
use protocol::framing::Flaw;
use protocol::policy::{decide, rewrite_native};
use protocol::route::{BodyKind, Route, RouteError, FORWARDED_HEADER};
use tokio::sync::OwnedSemaphorePermit;

use super::ctx::SandboxCtx;
use super::reqbody::{read_limited, ReadError};
use crate::limits::budget::Held;
use crate::net::hangup::Hangup;

/// A request that passed every check, ready to go upstream.
pub struct Checked {
    pub method: Method,
    pub route: Route,
    pub path: String,
    pub headers: HeaderMap,
    /// A JSON body, checked (bulky fields of native requests kept as written).
    pub body: Option<CheckedBody>,
    /// Any other body (blobs), as received.
    pub raw: Bytes,
    pub permit: Option<OwnedSemaphorePermit>,
    /// The body's share of `max_body_buffer`: given back with the body, once the answer's
    /// head has arrived (or the send failed). The bytes handed to the upstream client are
    /// gone by then; holding until the head is a small over-approximation.
    pub budget: Held,
    /// The watch on the client's connection, where the listener keeps one: a wait for
    /// Ollama after early headers ends when the client is gone.
    pub hangup: Option<Hangup>,
}

/// The gate, phase by phase: framing, route, body, decision. Fills the audit record as
/// facts become known; nothing has gone upstream when it refuses.
pub async fn check(
    ctx: &SandboxCtx,
    req: Request<Incoming>,
    rec: &mut AuditRecord,
) -> Result<Checked, BridgeError> {
    protocol::policy::peer_allowed(&ctx.sandbox, rec.peer.as_ref()).map_err(|d| d.to_error())?;
    looped(ctx, req.headers())?;
    // Every request takes a token, before anything is read or decided.
    ctx.limits.check_rate(&ctx.sandbox)?;
    let (parts, body) = req.into_parts();
    raw_framing(&parts.extensions)?;
    framing(&parts.headers)?;
    let route = route(&parts.method, &parts.uri)?;
    rec.endpoint = Some(Endpoint::Class(route.class()));
    // Endpoint class first: a denied class is refused before its body is read.
    protocol::policy::endpoint_allowed(&ctx.sandbox, route.class()).map_err(|d| d.to_error())?;
    // A spent token budget refuses model requests before their body is read.
    if protocol::budget::metered(&route) {
        ctx.shared.tokens.check(&ctx.sandbox)?;
    }
    let mut budget = ctx.limits.bodies.share();
    let kind = route.body_kind(parts.method.as_str());
    let raw = read_body(ctx, &parts, body, kind, &mut budget).await?;
    rec.bytes_in = raw.len() as u64;
    let (obj, raw) = decide_body(ctx, &route, kind, raw, rec)?;
    let permit = ctx
        .limits
        .acquire(&ctx.sandbox, parts.extensions.get::<Hangup>())
        .await?;
    Ok(Checked {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        route,
        headers: parts.headers,
        body: obj,
        raw,
        permit,
        budget,
        hangup: parts.extensions.get::<Hangup>().cloned(),
    })
}

/// A request the bridge itself sent upstream came back: refused at once, before it takes
/// a token or a slot, so a loop ends after one round instead of filling the limits.
fn looped(ctx: &SandboxCtx, h: &HeaderMap) -> Result<(), BridgeError> {
    if !h.contains_key(FORWARDED_HEADER) {
        return Ok(());
    }
    Err(BridgeError::new(
        Reason::LoopDetected,
        "loop detected: this request was already forwarded by an ollama-bridge, so the bridge's upstream leads back to a bridge listener (a bridge-guest on the host's 127.0.0.1:11434?); point [upstream] url at Ollama itself",
    )
    .with_detail(format!("upstream {}", ctx.pool.first().cfg.base)))
}

fn bad(m: impl Into<String>) -> BridgeError {
    BridgeError::new(Reason::BadRequest, m)
}

/// What the request head said about its framing before hyper resolved it (the server
/// reads it from the connection's bytes: `protocol::framing`): repeated or listed
/// `Content-Length`, `Content-Length` with `Transfer-Encoding`. The server closes the
/// connection after this refusal.
pub fn raw_framing(ext: &http::Extensions) -> Result<(), BridgeError> {
    match ext.get::<Flaw>() {
        Some(f) => Err(bad(f.message())),
        None => Ok(()),
    }
}

/// How the body is framed and encoded: one length, or chunked, never compressed.
/// (Header count and size are enforced by the parser: max_headers, max_header_bytes.)
fn framing(h: &HeaderMap) -> Result<(), BridgeError> {
    if h.contains_key(header::CONTENT_ENCODING) {
        return Err(BridgeError::new(
            Reason::UnsupportedMediaType,
            "Content-Encoding is not accepted; send the body uncompressed",
        ));
    }
    let cl_count = h.get_all(header::CONTENT_LENGTH).iter().count();
    if cl_count > 1 {
        return Err(bad("repeated Content-Length header"));
    }
    if let Some(te) = h.get(header::TRANSFER_ENCODING) {
        if cl_count > 0 {
            return Err(bad("both Content-Length and Transfer-Encoding are set"));
        }
        if h.get_all(header::TRANSFER_ENCODING).iter().count() > 1
            || !te.as_bytes().eq_ignore_ascii_case(b"chunked")
        {
            return Err(bad("Transfer-Encoding other than chunked is not accepted"));
        }
    }
    Ok(())
}

/// The route in Ollama's endpoint table.
fn route(method: &Method, uri: &http::Uri) -> Result<Route, BridgeError> {
    Route::classify(method.as_str(), uri.path(), uri.query()).map_err(|e| match e {
        RouteError::NotFound { .. } => BridgeError::new(Reason::NotFound, e.to_string()),
        RouteError::MethodNotAllowed { .. } => {
            BridgeError::new(Reason::MethodNotAllowed, e.to_string())
        }
        _ => bad(e.to_string()),
    })
}

/// Reads the body within `max_body`, the body budget and the body timeout.
async fn read_body(
    ctx: &SandboxCtx,
    parts: &http::request::Parts,
    body: Incoming,
    kind: BodyKind,
    budget: &mut Held,
) -> Result<Bytes, BridgeError> {
    let h = &parts.headers;
    let max = ctx.sandbox.max_body;
    let declared = h
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| bad("invalid Content-Length"))
        })
        .transpose()?;
    let too_large = || {
        BridgeError::new(
            Reason::TooLarge,
            format!(
                "request body is larger than max_body ({}) of sandbox \"{}\"",
                protocol::units::ByteSize(max),
                ctx.sandbox.name
            ),
        )
    };
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let has_body = declared.is_some_and(|n| n > 0) || h.contains_key(header::TRANSFER_ENCODING);
    match kind {
        BodyKind::None if has_body => Err(bad(format!(
            "{} {} takes no body",
            parts.method,
            parts.uri.path()
        ))),
        BodyKind::None => Ok(Bytes::new()),
        BodyKind::Json | BodyKind::Opaque => {
            let timeout = ctx.sandbox.limits.request_header_timeout;
            read_limited(body, max, declared, timeout, budget)
                .await
                .map_err(|e| match e {
                    ReadError::TooLarge { .. } => too_large(),
                    ReadError::Budget(x) => x.to_error(ctx.sandbox.name.as_str()),
                    e @ ReadError::Stalled(_) => BridgeError::new(
                        Reason::RequestTimeout,
                        format!("the request body stopped arriving: {e} (request_header_timeout)"),
                    ),
                    e => bad(format!("reading the request body failed: {e}")),
                })
        }
    }
}

/// Parses a JSON body strictly, decides the policy on it and applies the model's
/// policy (num_ctx, options, keep_alive). A JSON body moves into the [`CheckedBody`];
/// any other comes back as it was.
fn decide_body(
    ctx: &SandboxCtx,
    route: &Route,
    kind: BodyKind,
    raw: Bytes,
    rec: &mut AuditRecord,
) -> Result<(Option<CheckedBody>, Bytes), BridgeError> {
    let native = matches!(
        route,
        Route::Chat | Route::Generate | Route::Embed | Route::Embeddings
    );
    let (parsed, raw) = match kind {
        BodyKind::Json if raw.is_empty() => return Err(bad("missing request body")),
        // Native requests keep their bulky fields as written: a body costs its size, not
        // a tree many times larger. The OpenAI translation reads every field.
        BodyKind::Json if native => (Some(CheckedBody::parse_native(raw)), Bytes::new()),
        BodyKind::Json => (Some(CheckedBody::parse_all(raw)), Bytes::new()),
        _ => (None, raw),
    };
    let mut obj = parsed.transpose().map_err(|e| bad(e.to_string()))?;
    let permit = decide(&ctx.sandbox, route, obj.as_mut().map(|b| &mut b.fields)).map_err(|d| {
        rec.model = d.model().map(ToString::to_string);
        d.to_error()
    })?;
    rec.model = permit.model().map(ToString::to_string);
    if let (Some(o), Some(m)) = (obj.as_mut(), permit.model()) {
        if native {
            rewrite_native(&mut o.fields, &ctx.config, m)
                .map_err(|e| e.to_error())?
                .record(rec);
        }
    }
    Ok((obj, raw))
}
