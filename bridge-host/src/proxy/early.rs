//! Early headers: a streamed request still waiting for Ollama's answer head (a model
//! load) `[upstream] early_headers` after its arrival gets the bridge's own `200` and
//! stream headers, so a client with a header timeout never sees the wait as a hang. The
//! body follows once Ollama answers: its stream through the usual relay (idle timeout,
//! record at the end), or its error (or the bridge's: unreachable, `header_timeout`) as
//! the stream's one line, in the stream's format. While it waits, an SSE stream gets a
//! comment every [`COMMENT_EVERY`]; NDJSON has no comments and stays silent. The record
//! says `status` 200 (what was sent) and Ollama's status in `upstream_status`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use protocol::error::{BridgeError, Reason};
use protocol::openai::{native_error, upstream_error_body};
use serde_json::Value;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::record::Exchange;
use super::relay::{ended, BoxError, RespBody, StreamKind};
use super::respond::set_request_id;
use crate::net::hangup::Hangup;

/// The SSE comment sent while the model loads.
pub const WAITING: &[u8] = b": waiting for the model\n\n";
/// How often [`WAITING`] is sent.
pub const COMMENT_EVERY: Duration = Duration::from_secs(5);
/// The most of an error body read for its message.
const MAX_ERROR_BODY: usize = 64 << 10;

/// Ollama's answer head, on its way.
pub type Sending =
    Pin<Box<dyn Future<Output = Result<Response<Incoming>, BridgeError>> + Send + 'static>>;

/// The body after an early head: resolves once Ollama answered.
type Rest = Pin<Box<dyn Future<Output = RespBody> + Send + 'static>>;

/// When a request that arrived at `ex`'s start gets its headers early (`after` is
/// `[upstream] early_headers`, `None` when off or when the request does not stream).
pub fn deadline(ex: &Exchange, after: Option<Duration>) -> Option<Instant> {
    after.map(|d| Instant::from_std(ex.started()) + d)
}

/// Waits for Ollama's head until the deadline; `Err(kind)` when the deadline came first
/// (the send goes on in `sending`).
pub async fn head_by<K>(
    sending: &mut Sending,
    deadline: Option<(Instant, K)>,
) -> Result<Result<Response<Incoming>, BridgeError>, K> {
    let Some((at, kind)) = deadline else {
        return Ok(sending.await);
    };
    tokio::select! {
        biased;
        r = sending.as_mut() => Ok(r),
        () = tokio::time::sleep_until(at) => Err(kind),
    }
}

/// Ollama's answer after early headers, or `None` once the client closed its connection
/// (seen by `hangup`, where the listener keeps one; elsewhere the departure shows at the
/// next write: an SSE comment, Ollama's answer or the bridge's error).
pub async fn wait(
    sending: Sending,
    hangup: Option<Hangup>,
) -> Option<Result<Response<Incoming>, BridgeError>> {
    let Some(h) = hangup else {
        return Some(sending.await);
    };
    tokio::select! {
        r = sending => Some(r),
        () = h.gone() => None,
    }
}

/// The client went away while Ollama loaded: the upstream request is dropped with the
/// exchange, whose record says `client_closed` with the 200 sent; the body fails, so the
/// connection closes.
pub fn gone(ex: Exchange) -> RespBody {
    drop(ex);
    Gone.boxed_unsync()
}

/// A body that fails at once.
struct Gone;

impl Body for Gone {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(Some(Err("the client went away".into())))
    }
}

/// The early answer: `200`, the stream's content type and the request id now; the body
/// is what `rest` makes of the exchange once Ollama answered.
pub fn answer<F>(
    kind: StreamKind,
    mut ex: Exchange,
    rest: impl FnOnce(Exchange) -> F,
) -> Response<RespBody>
where
    F: Future<Output = RespBody> + Send + 'static,
{
    tracing::info!(request_id = %ex.id(), "no answer head from Ollama yet (a model load?): early headers sent");
    ex.head_sent(200);
    let mut out = Response::new(());
    *out.status_mut() = StatusCode::OK;
    let h = out.headers_mut();
    let ct = match kind {
        StreamKind::Sse => "text/event-stream",
        _ => "application/x-ndjson",
    };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    if kind == StreamKind::Sse {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    set_request_id(h, ex.id());
    let tick = (kind == StreamKind::Sse).then(|| {
        let mut t = tokio::time::interval_at(Instant::now() + COMMENT_EVERY, COMMENT_EVERY);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });
    let body = Early {
        rest: Some(Box::pin(rest(ex))),
        body: None,
        tick,
    };
    out.map(|()| body.boxed_unsync())
}

/// The body after an early head, from Ollama's answer: its body through `relay` when it
/// succeeded; otherwise its error (or the bridge's) as the stream's last line.
pub async fn then(
    kind: StreamKind,
    sent: Result<Response<Incoming>, BridgeError>,
    mut ex: Exchange,
    hold: Option<Box<dyn Send>>,
    idle: Duration,
    relay: impl FnOnce(Incoming, Exchange, Option<Box<dyn Send>>) -> RespBody,
) -> RespBody {
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return failed(kind, e, ex, hold),
    };
    let status = resp.status();
    ex.rec.upstream_status = Some(status.as_u16());
    if status.is_success() {
        return relay(resp.into_body(), ex, hold);
    }
    let msg = error_message(resp.into_body(), status, idle).await;
    tracing::warn!(request_id = %ex.id(), upstream_status = status.as_u16(), "Ollama failed after early headers: {msg}");
    let tail = match kind {
        StreamKind::Sse => {
            let mut v = b"data: ".to_vec();
            v.extend(upstream_error_body(status.as_u16(), &msg));
            v.extend_from_slice(b"\n\n");
            v
        }
        _ => {
            let mut v = serde_json::to_vec(&serde_json::json!({ "error": msg }))
                .expect("a JSON value serialises");
            v.push(b'\n');
            v
        }
    };
    ended(Bytes::from(tail), Reason::UpstreamError, ex, hold)
}

/// The bridge's own error after an early head, as the stream's last line.
pub fn failed(
    kind: StreamKind,
    e: BridgeError,
    ex: Exchange,
    hold: Option<Box<dyn Send>>,
) -> RespBody {
    let detail = e.detail.as_deref().unwrap_or("");
    tracing::warn!(request_id = %ex.id(), reason = e.reason.as_str(), detail, "failed after early headers: {}", e.message);
    let tail = kind.error_frame(&e).unwrap_or_default();
    ended(tail, e.reason, ex, hold)
}

/// Ollama's message in an error answer (its `error`, else the body's text).
async fn error_message(mut body: Incoming, status: StatusCode, idle: Duration) -> String {
    let mut buf = Vec::new();
    while buf.len() < MAX_ERROR_BODY {
        match tokio::time::timeout(idle, body.frame()).await {
            Ok(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    let room = MAX_ERROR_BODY - buf.len();
                    buf.extend_from_slice(&d[..d.len().min(room)]);
                }
            }
            _ => break,
        }
    }
    let msg = serde_json::from_slice::<Value>(&buf)
        .ok()
        .and_then(|v| native_error(&v))
        .unwrap_or_else(|| String::from_utf8_lossy(&buf).trim().to_owned());
    if msg.is_empty() {
        format!("Ollama answered {status}")
    } else {
        msg
    }
}

/// The body of an early answer: SSE comments while `rest` waits for Ollama, then the
/// body `rest` made.
struct Early {
    rest: Option<Rest>,
    body: Option<RespBody>,
    tick: Option<Interval>,
}

impl Body for Early {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(rest) = &mut this.rest {
            match rest.as_mut().poll(cx) {
                Poll::Ready(b) => {
                    this.rest = None;
                    this.tick = None;
                    this.body = Some(b);
                }
                Poll::Pending => {
                    // Comments are the bridge's own bytes: not in the record's bytes_out.
                    if let Some(t) = &mut this.tick {
                        if t.poll_tick(cx).is_ready() {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(WAITING)))));
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
        match &mut this.body {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_some_and(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        // Unknown: chunked, so the client sees the end only after the record.
        SizeHint::default()
    }
}

#[cfg(test)]
#[path = "early_tests.rs"]
mod tests;
