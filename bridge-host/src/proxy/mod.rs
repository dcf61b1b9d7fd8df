//! One request, start to end: parse → decide → rewrite → forward → observe.
//! Everything the sandbox sends is untrusted; what goes upstream is the re-serialised
//! JSON the policy decided on, never the original bytes.

pub mod listing;
pub mod openai;
pub mod record;
pub mod relay;
pub mod reqbody;
pub mod status;
pub mod upstream;

mod check;
mod ctx;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use protocol::audit::{AuditRecord, Decision, Peer, OUTPUT_LIMIT};
use protocol::error::BridgeError;
use protocol::route::{ErrorFormat, Route};
use serde_json::Value;

use crate::observe::audit_log::ACK_WAIT;
use crate::proxy::relay::{Relay, RespBody, StreamKind};
use crate::proxy::record::{finisher, head_only, start_record, Owed};
use check::check;
pub(crate) use check::Checked;
pub use ctx::{SandboxCtx, Shared};

/// Response header carrying the audit record's id.
pub const REQUEST_ID_HEADER: &str = "x-ollama-bridge-request-id";

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
    if rec.path == crate::proxy::status::PATH {
        return Ok(crate::proxy::status::serve(&ctx, req, rec, start).await);
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

/// Sends the checked request upstream and relays the answer.
async fn forward(
    ctx: &Arc<SandboxCtx>,
    c: Checked,
    mut rec: AuditRecord,
    start: Instant,
) -> Response<RespBody> {
    if ctx.sandbox.openai_via_native && matches!(c.route, Route::OaiChat | Route::OaiEmbeddings) {
        return crate::proxy::openai::forward(ctx, c, rec, start).await;
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
        return crate::proxy::listing::filtered(ctx, resp, c.route, rec, start).await;
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
        .map_err(|n: Infallible| -> crate::proxy::relay::BoxError { match n {} })
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
