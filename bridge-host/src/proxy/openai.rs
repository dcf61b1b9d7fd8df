//! `openai_via_native`: the host answers `/v1/chat/completions` and `/v1/embeddings`
//! itself through Ollama's `/api/chat` and `/api/embed`, so the model's num_ctx policy
//! applies and streamed tool calls arrive whole. The translation is `protocol::openai`;
//! this is the I/O around it: the upstream request, the SSE body (a [`Transform`] on
//! the usual [`Relay`], which keeps the idle timeout and the audit record), and the
//! gathered answers of non-streamed requests.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use protocol::audit::AuditRecord;
use protocol::error::{BridgeError, Reason};
use protocol::openai::response::CollectError;
use protocol::openai::{
    chat_request, embed_request, embed_response, native_error, upstream_error_body, ChatCollector,
    ChatStream, LineSplitter, Meta,
};
use protocol::policy::apply_num_ctx;
use protocol::route::{ErrorFormat, Route};
use protocol::ModelName;
use serde_json::Value;

use crate::proxy::relay::{Relay, RespBody, StreamKind, Transform};
use crate::proxy::record::finisher;
use crate::proxy::{refuse, set_request_id, Checked, SandboxCtx};

/// Longest NDJSON line accepted from Ollama.
const MAX_LINE: usize = 16 << 20;
/// Largest answer gathered for a non-streamed request or an error body.
const MAX_GATHER: usize = 64 << 20;

/// Serves a checked `/v1/chat/completions` or `/v1/embeddings` request natively.
pub(crate) async fn forward(
    ctx: &Arc<SandboxCtx>,
    c: Checked,
    mut rec: AuditRecord,
    start: Instant,
) -> Response<RespBody> {
    let Some(body) = c.body.as_ref() else {
        let e = BridgeError::new(400, Reason::BadRequest, "missing request body");
        return refuse(ctx, e, ErrorFormat::OpenAi, rec, start).await;
    };
    if ctx.config.audit.log_prompts {
        rec.prompt = Some(Value::Object(body.clone()));
    }
    let translated = match c.route {
        Route::OaiChat => chat_request(body).map(|r| (r.native.clone(), Target::Chat(r))),
        _ => embed_request(body).map(|r| (r.native.clone(), Target::Embed(r))),
    };
    let (mut native, target) = match translated {
        Ok(t) => t,
        Err(e) => return refuse(ctx, e.to_error(), ErrorFormat::OpenAi, rec, start).await,
    };
    let policy = rec
        .model
        .as_deref()
        .and_then(|m| ModelName::parse(m).ok())
        .and_then(|m| ctx.config.num_ctx_policy(&m));
    let n = apply_num_ctx(&mut native, policy);
    rec.num_ctx_requested = n.requested;
    rec.num_ctx_sent = n.sent;

    let path = match target {
        Target::Chat(_) => "/api/chat",
        Target::Embed(_) => "/api/embed",
    };
    tracing::debug!(request_id = %rec.request_id, native = path, num_ctx = ?n.sent, "openai_via_native");
    let bytes = Bytes::from(serde_json::to_vec(&native).expect("a JSON map serialises"));
    let up = &ctx.upstream;
    let sent = up
        .send(
            Method::POST,
            path,
            &c.headers,
            Some("application/json"),
            bytes,
        )
        .await;
    // The body has gone upstream (or never will): free it and give back its budget share.
    drop((native, c.body, c.budget));
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return refuse(ctx, e, ErrorFormat::OpenAi, rec, start).await,
    };
    let hold = c.permit.map(|p| Box::new(p) as Box<dyn Send>);
    let status = resp.status();
    let idle = up.cfg.idle_timeout;
    if !status.is_success() {
        // Ollama refused (unknown model, bad input): its message, in OpenAI's shape.
        let msg = match gather(resp.into_body(), idle).await {
            Ok(b) => serde_json::from_slice::<Value>(&b)
                .ok()
                .and_then(|v| native_error(&v))
                .unwrap_or_else(|| String::from_utf8_lossy(&b).trim().to_owned()),
            Err(e) => e.full_message(),
        };
        let body = upstream_error_body(status.as_u16(), &msg);
        return reply(ctx, status, "application/json", body, rec, start, hold);
    }
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    match target {
        Target::Chat(r) if r.stream => {
            let meta = Meta::new(&rec.request_id, created, &r.model);
            let t = SseTransform {
                lines: LineSplitter::new(MAX_LINE),
                stream: ChatStream::new(meta, r.include_usage),
            };
            rec.status = 200;
            let mut out = Response::new(());
            let h = out.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            set_request_id(h, &rec.request_id);
            let idle_message = format!(
                "Ollama sent nothing for {idle:?} mid-answer (idle_timeout); the answer is incomplete"
            );
            let relay = Relay::new(
                resp.into_body(),
                StreamKind::Sse,
                idle,
                idle_message,
                finisher(ctx, rec, start),
                hold,
            )
            .with_transform(Box::new(t));
            out.map(|()| relay.boxed_unsync())
        }
        Target::Chat(r) => {
            let meta = Meta::new(&rec.request_id, created, &r.model);
            let answer = match gather(resp.into_body(), idle).await {
                Ok(b) => collect_chat(meta, &b),
                Err(e) => Err(Failure::Bridge(e)),
            };
            match answer {
                Ok(v) => json_reply(ctx, StatusCode::OK, &v, rec, start, hold),
                Err(Failure::Ollama(msg)) => {
                    rec.reason = Some(Reason::UpstreamError.as_str().to_owned());
                    let body = upstream_error_body(500, &msg);
                    let status = StatusCode::INTERNAL_SERVER_ERROR;
                    reply(ctx, status, "application/json", body, rec, start, hold)
                }
                Err(Failure::Bridge(e)) => refuse(ctx, e, ErrorFormat::OpenAi, rec, start).await,
            }
        }
        Target::Embed(r) => {
            let answer = gather(resp.into_body(), idle).await.and_then(|b| {
                serde_json::from_slice::<Value>(&b)
                    .ok()
                    .and_then(|v| embed_response(&r, &v))
                    .ok_or_else(|| {
                        BridgeError::new(
                            502,
                            Reason::UpstreamError,
                            "Ollama's /api/embed answer has no embeddings",
                        )
                    })
            });
            match answer {
                Ok(v) => json_reply(ctx, StatusCode::OK, &v, rec, start, hold),
                Err(e) => refuse(ctx, e, ErrorFormat::OpenAi, rec, start).await,
            }
        }
    }
}

/// What the translated request asks for.
enum Target {
    Chat(protocol::openai::ChatRequest),
    Embed(protocol::openai::EmbedRequest),
}

/// Why a gathered answer could not be given.
enum Failure {
    /// Ollama said so itself (its message).
    Ollama(String),
    /// The bridge's own error (broken, silent or unreadable upstream).
    Bridge(BridgeError),
}

/// Reads a whole upstream body, waiting at most `idle` for each frame.
async fn gather(mut body: Incoming, idle: Duration) -> Result<Bytes, BridgeError> {
    let mut buf = Vec::new();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(BridgeError::new(
                    504,
                    Reason::UpstreamTimeout,
                    format!("Ollama sent nothing for {idle:?} mid-answer (idle_timeout)"),
                ))
            }
            Ok(None) => return Ok(Bytes::from(buf)),
            Ok(Some(Err(e))) => {
                return Err(BridgeError::new(
                    502,
                    Reason::UpstreamError,
                    format!("Ollama's answer broke off: {e}"),
                ))
            }
            Ok(Some(Ok(f))) => f,
        };
        if let Some(d) = frame.data_ref() {
            if buf.len() + d.len() > MAX_GATHER {
                return Err(BridgeError::new(
                    502,
                    Reason::UpstreamError,
                    format!("Ollama's answer is larger than {MAX_GATHER} bytes"),
                ));
            }
            buf.extend_from_slice(d);
        }
    }
}

/// Gathers Ollama's NDJSON chat chunks into one `chat.completion`.
fn collect_chat(meta: Meta, body: &[u8]) -> Result<Value, Failure> {
    let mut c = ChatCollector::new(meta);
    for line in body.split(|&b| b == b'\n') {
        c.line(line);
    }
    c.finish().map_err(|e| match e {
        CollectError::Ollama(m) => Failure::Ollama(m),
        e => Failure::Bridge(BridgeError::new(502, Reason::UpstreamError, e.to_string())),
    })
}

fn json_reply(
    ctx: &SandboxCtx,
    status: StatusCode,
    v: &Value,
    rec: AuditRecord,
    start: Instant,
    hold: Option<Box<dyn Send>>,
) -> Response<RespBody> {
    let body = serde_json::to_vec(v).expect("a JSON value serialises");
    reply(ctx, status, "application/json", body, rec, start, hold)
}

/// A complete answer; its audit record is written before the client sees its end.
fn reply(
    ctx: &SandboxCtx,
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
    mut rec: AuditRecord,
    start: Instant,
    hold: Option<Box<dyn Send>>,
) -> Response<RespBody> {
    rec.status = status.as_u16();
    let mut out = Response::new(());
    *out.status_mut() = status;
    let h = out.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    set_request_id(h, &rec.request_id);
    let relay = Relay::new(
        Full::new(Bytes::from(body)),
        StreamKind::Opaque,
        ctx.upstream.cfg.idle_timeout,
        String::new(),
        finisher(ctx, rec, start),
        hold,
    );
    out.map(|()| relay.boxed_unsync())
}

/// Ollama's NDJSON chat stream rewritten as OpenAI SSE, frame by frame.
struct SseTransform {
    lines: LineSplitter,
    stream: ChatStream,
}

impl Transform for SseTransform {
    fn feed(&mut self, data: &[u8]) -> Bytes {
        if self.stream.failed() || self.stream.is_done() {
            return Bytes::new(); // the client's stream is complete; the rest is not read
        }
        let mut out = Vec::new();
        let stream = &mut self.stream;
        if let Err(e) = self.lines.feed(data, |l| out.extend(stream.line(l))) {
            let err = BridgeError::new(502, Reason::UpstreamError, e.to_string());
            out.extend(stream.fail(&err));
        }
        Bytes::from(out)
    }

    fn finish(&mut self) -> Bytes {
        let mut out = Vec::new();
        if let Some(l) = self.lines.finish() {
            out.extend(self.stream.line(&l));
        }
        out.extend(self.stream.finish());
        Bytes::from(out)
    }

    fn fail(&mut self, err: &BridgeError) -> Bytes {
        Bytes::from(self.stream.fail(err))
    }

    fn failed(&self) -> bool {
        self.stream.failed()
    }
}
