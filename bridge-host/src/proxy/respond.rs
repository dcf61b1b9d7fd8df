//! Every answer the bridge makes itself, in one place: refusals (the reason decides the
//! status, `BridgeError` carries the reason), complete JSON answers, and the head of an
//! upstream answer copied for the client. Each finishes the request's [`Exchange`]: a
//! complete answer after its record is written, a relayed one at the end of its body.

use std::time::Duration;

use bytes::Bytes;
use http::response::Parts;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use protocol::error::BridgeError;
use protocol::route::ErrorFormat;

use super::record::Exchange;
use super::relay::{full, Relay, RespBody, StreamKind};

/// Response header carrying the audit record's id.
pub const REQUEST_ID_HEADER: &str = "x-ollama-bridge-request-id";

/// `Allow` of a 405: the methods Ollama's routes take.
const ALLOWED_METHODS: &str = "GET, HEAD, POST, DELETE";

/// Answers with the bridge's own error, after its audit record is written.
pub async fn refuse(ex: Exchange, e: BridgeError, format: ErrorFormat) -> Response<RespBody> {
    let body = e.body(format);
    let status = e.status();
    let rec = &ex.rec;
    let detail = e.detail.as_deref().unwrap_or("");
    if e.reason.is_denial() {
        tracing::info!(sandbox = %rec.sandbox, request_id = %rec.request_id, method = %rec.method, path = %rec.path, status, reason = e.reason.as_str(), detail, "refused: {}", e.message);
    } else {
        tracing::warn!(sandbox = %rec.sandbox, request_id = %rec.request_id, status, reason = e.reason.as_str(), detail, "failed: {}", e.message);
    }
    let id = ex.id().to_owned();
    ex.finish(status, Some(e.reason), body.len() as u64).await;
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    match status {
        429 => {
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from(e.retry_after.unwrap_or(1)),
            );
        }
        405 => {
            h.insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
        }
        _ => {}
    }
    set_request_id(h, &id);
    resp
}

/// A complete answer the bridge wrote itself (e.g. a status document), after its record
/// is written. `extra` headers are added to the content type and the request id.
pub async fn answer(
    mut ex: Exchange,
    status: StatusCode,
    content_type: &'static str,
    extra: &[(header::HeaderName, &'static str)],
    body: Vec<u8>,
) -> Response<RespBody> {
    let id = ex.id().to_owned();
    ex.allow();
    ex.finish(status.as_u16(), None, body.len() as u64).await;
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (k, v) in extra {
        h.insert(k.clone(), HeaderValue::from_static(v));
    }
    set_request_id(h, &id);
    resp
}

/// A complete answer built from Ollama's (a filtered listing, a translated OpenAI
/// answer): the record is written before the client sees the body end. `hold` lives
/// until then.
pub fn complete(
    mut ex: Exchange,
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
    hold: Option<Box<dyn Send>>,
) -> Response<RespBody> {
    let mut out = Response::new(());
    *out.status_mut() = status;
    let h = out.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    set_request_id(h, ex.id());
    ex.rec.status = status.as_u16();
    // A complete body is never silent: the idle timeout cannot fire.
    let body = Full::new(Bytes::from(body));
    out.map(|()| relayed(body, StreamKind::Opaque, COMPLETE_IDLE, ex, hold))
}

/// The idle timeout given to the relay of a body that is already complete.
const COMPLETE_IDLE: Duration = Duration::from_secs(3600);

/// A body passed through [`Relay`] (silence over `idle` ends it), which finishes `ex`
/// at its end.
pub fn relayed<B>(
    body: B,
    kind: StreamKind,
    idle: Duration,
    ex: Exchange,
    hold: Option<Box<dyn Send>>,
) -> RespBody
where
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: std::fmt::Display,
{
    Relay::new(body, kind, idle, ex, hold).boxed_unsync()
}

/// Readies the head of an upstream answer for the client: hop-by-hop headers go, the
/// request id comes, and so does `Content-Length` (the relay may end a broken stream
/// with an error line, a filtered listing is shorter, a HEAD answer has no body). The
/// record takes the status.
pub fn copy_head(parts: &mut Parts, ex: &mut Exchange) {
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::CONTENT_LENGTH);
    set_request_id(&mut parts.headers, ex.id());
    ex.rec.status = parts.status.as_u16();
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
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

/// Sets the record's id on an answer.
pub fn set_request_id(h: &mut HeaderMap, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert(REQUEST_ID_HEADER, v);
    }
}
