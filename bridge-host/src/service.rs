//! One request, start to end: parse → decide → rewrite → forward → observe.
//! Everything the sandbox sends is untrusted; what goes upstream is the re-serialised
//! JSON the policy decided on, never the original bytes.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use protocol::audit::{AuditRecord, Decision, Peer, OUTPUT_LIMIT};
use protocol::config::{Config, Sandbox};
use protocol::error::{BridgeError, Reason};
use protocol::json::parse_strict_object;
use protocol::policy::{apply_num_ctx, decide};
use protocol::route::{BodyKind, ErrorFormat, Route, RouteError};
use serde_json::{Map, Value};
use tokio::sync::OwnedSemaphorePermit;

use crate::audit::{AuditLog, ACK_WAIT};
use crate::body::{Relay, RespBody, StreamKind};
use crate::budget::Held;
use crate::hangup::Hangup;
use crate::limit::Limiters;
use crate::record::{finisher, head_only, start_record, Owed};
use crate::reqbody::{read_limited, ReadError};
use crate::upstream::Upstream;

/// Response header carrying the audit record's id.
pub const REQUEST_ID_HEADER: &str = "x-ollama-bridge-request-id";

/// What every listener shares.
pub struct Shared {
    pub audit: AuditLog,
    pub metrics: crate::metrics::Metrics,
    /// Set once shutdown began: requests cut off from now on are `shutting_down`.
    pub draining: AtomicBool,
    next_id: AtomicU64,
    id_prefix: String,
}

impl Shared {
    pub fn new(audit: AuditLog) -> Shared {
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        Shared {
            audit,
            metrics: crate::metrics::Metrics::new(),
            draining: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            id_prefix: format!("{:x}", boot & 0x00ff_ffff_ffff),
        }
    }

    /// Ends a request: counts it and queues its audit record (the one place both happen).
    pub fn record(
        &self,
        rec: &AuditRecord,
        ack: bool,
    ) -> Option<tokio::sync::oneshot::Receiver<()>> {
        self.metrics.observe(rec);
        self.audit.submit(rec, ack)
    }

    /// Writes a fallback record if the request still owes one (and counts it then).
    pub fn record_owed(&self, rec: &AuditRecord) {
        if self.audit.submit_owed(rec) {
            self.metrics.observe(rec);
        }
    }

    /// A new audit record id, unique within this daemon's run.
    pub fn request_id(&self) -> String {
        format!(
            "{}-{:06x}",
            self.id_prefix,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// One listener's context under one configuration: its sandbox's policy and limits, the
/// configuration it came from and the upstream client. A reload swaps in a successor;
/// requests already running keep the context they started with.
pub struct SandboxCtx {
    pub sandbox: Sandbox,
    pub limits: Limiters,
    pub shared: Arc<Shared>,
    pub config: Arc<Config>,
    pub upstream: Arc<Upstream>,
}

impl SandboxCtx {
    pub fn new(
        sandbox: Sandbox,
        shared: Arc<Shared>,
        config: Arc<Config>,
        upstream: Arc<Upstream>,
    ) -> SandboxCtx {
        SandboxCtx {
            limits: Limiters::new(&sandbox),
            sandbox,
            shared,
            config,
            upstream,
        }
    }

    /// The context after a reload: the same limiters where the limit is unchanged, so
    /// requests in flight across the reload still count against them.
    pub fn successor(
        &self,
        sandbox: Sandbox,
        config: Arc<Config>,
        upstream: Arc<Upstream>,
    ) -> SandboxCtx {
        let limits = self.limits.successor(&sandbox);
        let mut next = SandboxCtx::new(sandbox, self.shared.clone(), config, upstream);
        next.limits = limits;
        next
    }
}

/// A request that passed every check, ready to go upstream.
pub(crate) struct Checked {
    pub(crate) method: Method,
    pub(crate) route: Route,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Map<String, Value>>,
    pub(crate) raw: Bytes,
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    /// The body's share of `max_body_buffer`: given back with the body, once the answer's
    /// head has arrived (or the send failed). The bytes handed to the upstream client are
    /// gone by then; holding until the head is a small over-approximation.
    pub(crate) budget: Held,
}

/// Serves one request on a sandbox's listener.
pub async fn handle(
    ctx: Arc<SandboxCtx>,
    peer: Option<Peer>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let start = Instant::now();
    let rec = start_record(&ctx, peer, &req);
    // In flight until handled; a streamed answer's finisher holds its own count.
    let _flight = ctx
        .shared
        .metrics
        .in_flight_guard(ctx.sandbox.name.as_str());
    if rec.path == crate::status::PATH {
        return Ok(crate::status::serve(&ctx, req, rec, start).await);
    }
    let format = Route::error_format_for_path(req.uri().path());
    let mut owed = Owed::new(&ctx.shared, rec, start);
    let resp = match check(&ctx, req, &mut owed.rec).await {
        Ok(checked) => {
            owed.rec.decision = Decision::Allow;
            forward(&ctx, checked, owed.rec.clone(), start).await
        }
        Err(e) => refuse(&ctx, e, format, owed.rec.clone(), start).await,
    };
    owed.disarm();
    Ok(resp)
}

/// Parse, decide and rewrite. Fills the audit record as facts become known.
async fn check(
    ctx: &SandboxCtx,
    req: Request<Incoming>,
    rec: &mut AuditRecord,
) -> Result<Checked, BridgeError> {
    protocol::policy::peer_allowed(&ctx.sandbox, rec.peer.as_ref()).map_err(|d| d.to_error())?;
    // Every request takes a token, before anything is read or decided.
    ctx.limits.check_rate(&ctx.sandbox)?;
    let (parts, body) = req.into_parts();
    let bad = |m: String| BridgeError::new(400, Reason::BadRequest, m);
    let h = &parts.headers;
    if h.contains_key(header::CONTENT_ENCODING) {
        return Err(BridgeError::new(
            415,
            Reason::UnsupportedMediaType,
            "Content-Encoding is not accepted; send the body uncompressed",
        ));
    }
    // Header count and size are enforced by the parser (max_headers, max_header_bytes).
    let cl_count = h.get_all(header::CONTENT_LENGTH).iter().count();
    if cl_count > 1 {
        return Err(bad("repeated Content-Length header".into()));
    }
    if let Some(te) = h.get(header::TRANSFER_ENCODING) {
        if cl_count > 0 {
            return Err(bad(
                "both Content-Length and Transfer-Encoding are set".into()
            ));
        }
        if h.get_all(header::TRANSFER_ENCODING).iter().count() > 1
            || !te.as_bytes().eq_ignore_ascii_case(b"chunked")
        {
            return Err(bad(
                "Transfer-Encoding other than chunked is not accepted".into()
            ));
        }
    }

    let route = Route::classify(parts.method.as_str(), parts.uri.path(), parts.uri.query())
        .map_err(|e| match e {
            RouteError::NotFound { .. } => BridgeError::new(404, Reason::NotFound, e.to_string()),
            RouteError::MethodNotAllowed { .. } => {
                BridgeError::new(405, Reason::MethodNotAllowed, e.to_string())
            }
            _ => bad(e.to_string()),
        })?;
    rec.endpoint = Some(route.class().as_str().to_owned());

    // Endpoint class first: a denied class is refused before its body is read.
    protocol::policy::endpoint_allowed(&ctx.sandbox, route.class()).map_err(|d| d.to_error())?;

    let max = ctx.sandbox.max_body;
    let declared = h
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| bad("invalid Content-Length".into()))
        })
        .transpose()?;
    let too_large = || {
        BridgeError::new(
            413,
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
    let kind = route.body_kind(parts.method.as_str());
    let mut budget = ctx.limits.bodies.share();
    let has_body = declared.is_some_and(|n| n > 0) || h.contains_key(header::TRANSFER_ENCODING);
    let raw = match kind {
        BodyKind::None if has_body => {
            return Err(bad(format!(
                "{} {} takes no body",
                parts.method,
                parts.uri.path()
            )))
        }
        BodyKind::None => Bytes::new(),
        BodyKind::Json | BodyKind::Opaque => match read_limited(
            body,
            max,
            declared,
            ctx.sandbox.limits.request_header_timeout,
            &mut budget,
        )
        .await
        {
            Ok(b) => b,
            Err(ReadError::TooLarge { .. }) => return Err(too_large()),
            Err(ReadError::Budget(x)) => return Err(x.to_error(ctx.sandbox.name.as_str())),
            Err(e @ ReadError::Stalled(_)) => {
                return Err(BridgeError::new(
                    408,
                    Reason::RequestTimeout,
                    format!("the request body stopped arriving: {e} (request_header_timeout)"),
                ))
            }
            Err(e) => return Err(bad(format!("reading the request body failed: {e}"))),
        },
    };
    rec.bytes_in = raw.len() as u64;

    let mut obj = match kind {
        BodyKind::Json => {
            if raw.is_empty() {
                return Err(bad("missing request body".into()));
            }
            Some(parse_strict_object(&raw).map_err(|e| bad(e.to_string()))?)
        }
        _ => None,
    };
    let permit = decide(&ctx.sandbox, &route, obj.as_mut()).map_err(|d| {
        rec.model = d.model().map(ToString::to_string);
        d.to_error()
    })?;
    rec.model = permit.model().map(ToString::to_string);

    if let (Some(o), Some(m)) = (obj.as_mut(), permit.model()) {
        if matches!(
            route,
            Route::Chat | Route::Generate | Route::Embed | Route::Embeddings
        ) {
            let n = apply_num_ctx(o, ctx.config.num_ctx_policy(m));
            rec.num_ctx_requested = n.requested;
            rec.num_ctx_sent = n.sent;
        }
    }

    let permit_slot = ctx
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
        permit: permit_slot,
        budget,
    })
}

/// Sends the checked request upstream and relays the answer.
async fn forward(
    ctx: &Arc<SandboxCtx>,
    c: Checked,
    mut rec: AuditRecord,
    start: Instant,
) -> Response<RespBody> {
    if ctx.sandbox.openai_via_native && matches!(c.route, Route::OaiChat | Route::OaiEmbeddings) {
        return crate::openai::forward(ctx, c, rec, start).await;
    }
    let format = Route::error_format_for_path(&c.path);
    let (content_type, body) = match &c.body {
        Some(o) => (
            Some("application/json"),
            Bytes::from(serde_json::to_vec(o).expect("a JSON map serialises")),
        ),
        None => (None, c.raw.clone()),
    };
    if ctx.config.audit.log_prompts {
        rec.prompt = c.body.clone().map(Value::Object);
    }
    let up = &ctx.upstream;
    let sent = up
        .send(c.method.clone(), &c.path, &c.headers, content_type, body)
        .await;
    // The body has gone upstream (or never will): free it and give back its budget share.
    drop((c.body, c.raw, c.budget));
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return refuse(ctx, e, format, rec, start).await,
    };
    if c.method == Method::HEAD {
        return head_only(ctx, resp, rec, start).await;
    }
    if resp.status().is_success() && matches!(c.route, Route::Tags | Route::Ps | Route::OaiModels) {
        return crate::listing::filtered(ctx, resp, c.route, rec, start).await;
    }
    let (mut parts, inner) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::CONTENT_LENGTH);
    let kind = StreamKind::from_content_type(
        parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    set_request_id(&mut parts.headers, &rec.request_id);
    rec.status = parts.status.as_u16();
    let idle = up.cfg.idle_timeout;
    let idle_message = format!(
        "Ollama sent nothing for {idle:?} mid-answer (idle_timeout); the answer is incomplete"
    );
    let hold = c.permit.map(|p| Box::new(p) as Box<dyn Send>);
    let mut relay = Relay::new(
        inner,
        kind,
        idle,
        idle_message,
        finisher(ctx, rec, start),
        hold,
    );
    if ctx.config.audit.log_prompts {
        relay = relay.capture_output(OUTPUT_LIMIT);
    }
    Response::from_parts(parts, relay.boxed_unsync())
}

/// Answers with the bridge's own error, after its audit record is written.
pub(crate) async fn refuse(
    ctx: &SandboxCtx,
    e: BridgeError,
    format: ErrorFormat,
    mut rec: AuditRecord,
    start: Instant,
) -> Response<RespBody> {
    let body = e.body(format);
    rec.status = e.status;
    rec.reason = Some(e.reason.as_str().to_owned());
    if e.reason.is_denial() {
        rec.decision = Decision::Deny;
    }
    rec.bytes_out = body.len() as u64;
    rec.duration_ms = start.elapsed().as_millis() as u64;
    if e.reason.is_denial() {
        tracing::info!(sandbox = %rec.sandbox, request_id = %rec.request_id, method = %rec.method, path = %rec.path, status = e.status, reason = e.reason.as_str(), "refused: {}", e.message);
    } else {
        tracing::warn!(sandbox = %rec.sandbox, request_id = %rec.request_id, status = e.status, reason = e.reason.as_str(), "failed: {}", e.message);
    }
    if let Some(ack) = ctx.shared.record(&rec, true) {
        let _ = tokio::time::timeout(ACK_WAIT, ack).await;
    }
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() =
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if e.status == 429 {
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from(e.retry_after.unwrap_or(1)),
        );
    }
    if e.status == 405 {
        h.insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, DELETE"),
        );
    }
    set_request_id(h, &rec.request_id);
    resp
}

/// A complete body as the response body type.
pub fn full(b: Bytes) -> RespBody {
    Full::new(b)
        .map_err(|n: Infallible| -> crate::body::BoxError { match n {} })
        .boxed_unsync()
}

pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        h.remove(name);
    }
    h.remove("keep-alive");
}

pub(crate) fn set_request_id(h: &mut HeaderMap, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert(REQUEST_ID_HEADER, v);
    }
}
