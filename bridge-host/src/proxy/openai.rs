//! `openai_via_native`: the host answers `/v1/chat/completions`, `/v1/completions` and
//! `/v1/embeddings` itself through Ollama's `/api/chat`, `/api/generate` and `/api/embed`,
//! so the model's num_ctx policy applies and streamed tool calls arrive whole. The
//! translation is `protocol::openai`;
//! this is the I/O around it: the upstream request, the SSE body (a [`Transform`] on
//! the usual [`Relay`], which keeps the idle timeout and the audit record), and the
//! gathered answers of non-streamed requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use protocol::error::{BridgeError, Reason};
use protocol::openai::response::CollectError;
use protocol::openai::{
    chat_request, completion_meta, completion_request, embed_request, embed_response, native_error,
    upstream_error_body, ChatCollector, ChatStream, CompletionCollector, CompletionStream,
    LineSplitter, Meta, SseStream,
};
use protocol::policy::rewrite_native;
use protocol::route::{ErrorFormat, Route};
use protocol::salvage::ChatSalvage;
use protocol::ModelName;
use serde_json::{Map, Value};

use super::check::Checked;
use super::ctx::SandboxCtx;
use super::early::{self, Sending};
use super::record::Exchange;
use super::relay::{RespBody, StreamKind, Transform};
use super::respond::{complete, refuse, set_request_id};
use super::upstream::Upstream;
use crate::os::clock::unix_secs;

/// Longest NDJSON line accepted from Ollama.
const MAX_LINE: usize = 16 << 20;
/// Largest answer gathered for a non-streamed request or an error body.
const MAX_GATHER: usize = 64 << 20;

/// Serves a checked `/v1/chat/completions`, `/v1/completions` or `/v1/embeddings` request
/// natively: translate, send, then answer in OpenAI's format. A streamed one gets its
/// SSE headers early when Ollama has not answered within `[upstream] early_headers`.
pub async fn forward(ctx: &Arc<SandboxCtx>, c: Checked, mut ex: Exchange) -> Response<RespBody> {
    let (native, target) = match translate(ctx, &c, &mut ex) {
        Ok(t) => t,
        Err(e) => return refuse(ex, e, ErrorFormat::OpenAi).await,
    };
    let picked = match super::pick::server(ctx, &mut ex) {
        Ok(p) => p,
        Err(e) => return refuse(ex, e, ErrorFormat::OpenAi).await,
    };
    let up = picked.up.clone();
    let salvage = super::salvage::for_request(ctx, &c, &ex);
    let hold = c.permit.map(|p| Box::new(p) as Box<dyn Send>);
    let early = early::deadline(&ex, up.cfg.early_headers)
        .filter(|_| target.streams())
        .map(|at| (at, StreamKind::Sse));
    let hangup = c.hangup.clone();
    let (headers, path) = (c.headers, target.path());
    let mut sending = send(
        ctx, &picked, &c.route, &mut ex, hangup, headers, native, path,
    );
    let sent = match early::head_by(&mut sending, early).await {
        Ok(sent) => sent,
        Err(kind) => {
            // Ollama is still silent (a model load): the head goes now, the rest later.
            let held = (c.body, c.budget);
            let hangup = c.hangup;
            let idle = up.cfg.idle_timeout;
            return early::answer(kind, ex, move |ex| async move {
                let Some(sent) = early::wait(sending, hangup).await else {
                    return early::gone(ex);
                };
                drop(held);
                early::then(kind, sent, ex, hold, idle, move |body, ex, hold| {
                    streamed(target, body, idle, ex, hold, salvage)
                })
                .await
            });
        }
    };
    // The body has gone upstream (or never will): free it and give back its budget share.
    drop((c.body, c.budget));
    match sent {
        Ok(resp) => respond(&up, resp, target, ex, hold, salvage).await,
        Err(e) => refuse(ex, e, ErrorFormat::OpenAi).await,
    }
}

/// The OpenAI request as Ollama's native one, with the model's policy applied (num_ctx,
/// pinned runner options, keep_alive).
fn translate(
    ctx: &SandboxCtx,
    c: &Checked,
    ex: &mut Exchange,
) -> Result<(Map<String, Value>, Target), BridgeError> {
    let body = c
        .body
        .as_ref()
        .map(|b| &b.fields)
        .ok_or_else(|| BridgeError::new(Reason::BadRequest, "missing request body"))?;
    if ctx.config.audit.log_prompts {
        ex.rec.prompt = Some(Value::Object(body.clone()));
    }
    let (mut native, target) = match c.route {
        Route::OaiChat => chat_request(body).map(|r| (r.native.clone(), Target::Chat(r))),
        Route::OaiCompletions => {
            completion_request(body).map(|r| (r.native.clone(), Target::Completion(r)))
        }
        _ => embed_request(body).map(|r| (r.native.clone(), Target::Embed(r))),
    }
    .map_err(|e| e.to_error())?;
    // The model was decided on (and canonicalised) by the gate.
    let model = ex.rec.model.as_deref().map(ModelName::parse);
    let Some(Ok(model)) = model else {
        return Err(BridgeError::new(
            Reason::Internal,
            "no decided model to translate for",
        ));
    };
    rewrite_native(&mut native, &ctx.config, &model)
        .map_err(|e| e.to_error())?
        .record(&mut ex.rec);
    tracing::debug!(request_id = %ex.id(), native = target.path(), num_ctx = ?ex.rec.num_ctx_sent, "openai_via_native");
    Ok((native, target))
}

/// Sends the native request (the future owns what it needs: it may outlive the head).
#[allow(clippy::too_many_arguments)]
fn send(
    ctx: &SandboxCtx,
    picked: &super::pick::Picked,
    route: &Route,
    ex: &mut Exchange,
    hangup: Option<crate::net::hangup::Hangup>,
    headers: HeaderMap,
    native: Map<String, Value>,
    path: &'static str,
) -> Sending {
    let bytes = Bytes::from(serde_json::to_vec(&native).expect("a JSON map serialises"));
    drop(native);
    let json = Some("application/json");
    let post = Method::POST;
    picked.sending(
        ctx,
        route,
        ex,
        hangup,
        post,
        path.to_owned(),
        headers,
        json,
        vec![bytes],
    )
}

/// The SSE body of a streamed request's successful answer (after early headers).
fn streamed(
    target: Target,
    body: Incoming,
    idle: Duration,
    ex: Exchange,
    hold: Option<Box<dyn Send>>,
    salvage: Option<ChatSalvage>,
) -> RespBody {
    let created = unix_secs();
    match target {
        Target::Chat(r) => {
            let meta = Meta::new(ex.id(), created, &r.model);
            let stream = ChatStream::new(meta, r.include_usage);
            sse_body(body, stream, idle, ex, hold, salvage)
        }
        Target::Completion(r) => {
            let meta = completion_meta(ex.id(), created, &r.model);
            let stream = CompletionStream::new(meta, r.include_usage, r.echo);
            sse_body(body, stream, idle, ex, hold, None)
        }
        Target::Embed(_) => {
            let e = BridgeError::new(Reason::Internal, "an embedding does not stream");
            early::failed(StreamKind::Sse, e, ex, hold)
        }
    }
}

/// Answers from Ollama's native answer: an SSE stream, or a gathered OpenAI object.
async fn respond(
    up: &Upstream,
    resp: Response<Incoming>,
    target: Target,
    mut ex: Exchange,
    hold: Option<Box<dyn Send>>,
    salvage: Option<ChatSalvage>,
) -> Response<RespBody> {
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
        return complete(ex, status, "application/json", body, hold);
    }
    let created = unix_secs();
    match target {
        Target::Chat(r) if r.stream => {
            let meta = Meta::new(ex.id(), created, &r.model);
            let stream = ChatStream::new(meta, r.include_usage);
            sse(resp.into_body(), stream, idle, ex, hold, salvage)
        }
        Target::Chat(r) => {
            let meta = Meta::new(ex.id(), created, &r.model);
            let answer = match gather(resp.into_body(), idle).await {
                Ok(b) => collect_chat(meta, &b, salvage, &mut ex),
                Err(e) => Err(Failure::Bridge(e)),
            };
            gathered(ex, answer, hold).await
        }
        Target::Completion(r) if r.stream => {
            let meta = completion_meta(ex.id(), created, &r.model);
            let stream = CompletionStream::new(meta, r.include_usage, r.echo);
            sse(resp.into_body(), stream, idle, ex, hold, None)
        }
        Target::Completion(r) => {
            let meta = completion_meta(ex.id(), created, &r.model);
            let answer = match gather(resp.into_body(), idle).await {
                Ok(b) => collect_completion(CompletionCollector::new(meta, r.echo), &b),
                Err(e) => Err(Failure::Bridge(e)),
            };
            gathered(ex, answer, hold).await
        }
        Target::Embed(r) => {
            let answer = gather(resp.into_body(), idle).await.and_then(|b| {
                serde_json::from_slice::<Value>(&b)
                    .ok()
                    .and_then(|v| embed_response(&r, &v))
                    .ok_or_else(|| {
                        BridgeError::new(
                            Reason::UpstreamError,
                            "Ollama's /api/embed answer has no embeddings",
                        )
                    })
            });
            match answer {
                Ok(v) => json(ex, &v, hold),
                Err(e) => refuse(ex, e, ErrorFormat::OpenAi).await,
            }
        }
    }
}

/// The SSE answer to a streamed request: Ollama's NDJSON rewritten by `stream` as it
/// passes through the relay (idle timeout, token counts from Ollama's chunks, the record
/// at the end).
fn sse<S: SseStream + 'static>(
    body: Incoming,
    stream: S,
    idle: Duration,
    mut ex: Exchange,
    hold: Option<Box<dyn Send>>,
    salvage: Option<ChatSalvage>,
) -> Response<RespBody> {
    ex.rec.status = 200;
    let mut out = Response::new(());
    let h = out.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    set_request_id(h, ex.id());
    out.map(|()| sse_body(body, stream, idle, ex, hold, salvage))
}

/// Ollama's NDJSON as SSE through the relay.
fn sse_body<S: SseStream + 'static>(
    body: Incoming,
    stream: S,
    idle: Duration,
    ex: Exchange,
    hold: Option<Box<dyn Send>>,
    salvage: Option<ChatSalvage>,
) -> RespBody {
    let t = SseTransform {
        lines: LineSplitter::new(MAX_LINE),
        stream,
        salvage,
    };
    super::relay::Relay::new(body, StreamKind::Sse, idle, ex, hold)
        .with_transform(Box::new(t))
        .boxed_unsync()
}

/// The answer to a non-streamed request from what was gathered: the OpenAI object,
/// Ollama's own error (500, its message), or the bridge's.
async fn gathered(
    mut ex: Exchange,
    answer: Result<Value, Failure>,
    hold: Option<Box<dyn Send>>,
) -> Response<RespBody> {
    match answer {
        Ok(v) => json(ex, &v, hold),
        Err(Failure::Ollama(msg)) => {
            ex.rec.reason = Some(Reason::UpstreamError);
            let body = upstream_error_body(500, &msg);
            let status = StatusCode::INTERNAL_SERVER_ERROR;
            complete(ex, status, "application/json", body, hold)
        }
        Err(Failure::Bridge(e)) => refuse(ex, e, ErrorFormat::OpenAi).await,
    }
}

/// What the translated request asks for.
enum Target {
    Chat(protocol::openai::ChatRequest),
    Completion(protocol::openai::CompletionRequest),
    Embed(protocol::openai::EmbedRequest),
}

impl Target {
    /// The client asked for a stream.
    fn streams(&self) -> bool {
        match self {
            Target::Chat(r) => r.stream,
            Target::Completion(r) => r.stream,
            Target::Embed(_) => false,
        }
    }

    /// Ollama's native route for it.
    fn path(&self) -> &'static str {
        match self {
            Target::Chat(_) => "/api/chat",
            Target::Completion(_) => "/api/generate",
            Target::Embed(_) => "/api/embed",
        }
    }
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
                    Reason::UpstreamTimeout,
                    format!("Ollama sent nothing for {idle:?} mid-answer (idle_timeout)"),
                ))
            }
            Ok(None) => return Ok(Bytes::from(buf)),
            Ok(Some(Err(e))) => {
                return Err(BridgeError::new(
                    Reason::UpstreamError,
                    format!("Ollama's answer broke off: {e}"),
                ))
            }
            Ok(Some(Ok(f))) => f,
        };
        if let Some(d) = frame.data_ref() {
            if buf.len() + d.len() > MAX_GATHER {
                return Err(BridgeError::new(
                    Reason::UpstreamError,
                    format!("Ollama's answer is larger than {MAX_GATHER} bytes"),
                ));
            }
            buf.extend_from_slice(d);
        }
    }
}

/// Gathers Ollama's NDJSON chat chunks into one `chat.completion` (through the salvage,
/// when it has one).
fn collect_chat(
    meta: Meta,
    body: &[u8],
    mut salvage: Option<ChatSalvage>,
    ex: &mut Exchange,
) -> Result<Value, Failure> {
    let mut c = ChatCollector::new(meta);
    for line in body.split(|&b| b == b'\n') {
        match &mut salvage {
            Some(s) => s.each_line(line, |l| c.line(l)),
            None => c.line(line),
        }
    }
    if let Some(s) = &mut salvage {
        s.finish_each(|l| c.line(l));
        ex.rec.tool_calls_salvaged = Some(s.salvaged() as u64).filter(|&n| n > 0);
    }
    c.finish().map_err(failure)
}

/// Gathers Ollama's NDJSON generate chunks into one `text_completion`.
fn collect_completion(mut c: CompletionCollector, body: &[u8]) -> Result<Value, Failure> {
    for line in body.split(|&b| b == b'\n') {
        c.line(line);
    }
    c.finish().map_err(failure)
}

/// A gathered answer's failure: Ollama's own message, or the bridge's error.
fn failure(e: CollectError) -> Failure {
    match e {
        CollectError::Ollama(m) => Failure::Ollama(m),
        e => Failure::Bridge(BridgeError::new(Reason::UpstreamError, e.to_string())),
    }
}

/// A gathered OpenAI object as the answer.
fn json(ex: Exchange, v: &Value, hold: Option<Box<dyn Send>>) -> Response<RespBody> {
    let body = serde_json::to_vec(v).expect("a JSON value serialises");
    complete(ex, StatusCode::OK, "application/json", body, hold)
}

/// Ollama's NDJSON stream (chat or generate) rewritten as OpenAI SSE, frame by frame.
struct SseTransform<S> {
    lines: LineSplitter,
    stream: S,
    /// Tool-call salvage on Ollama's lines before they are translated.
    salvage: Option<ChatSalvage>,
}

impl<S: SseStream> Transform for SseTransform<S> {
    fn feed(&mut self, data: &[u8]) -> Bytes {
        if self.stream.failed() || self.stream.is_done() {
            return Bytes::new(); // the client's stream is complete; the rest is not read
        }
        let mut out = Vec::new();
        let (stream, salvage) = (&mut self.stream, &mut self.salvage);
        let fed = self.lines.feed(data, |l| match salvage {
            Some(s) => s.each_line(l, |l| out.extend(stream.line(l))),
            None => out.extend(stream.line(l)),
        });
        if let Err(e) = fed {
            let err = BridgeError::new(Reason::UpstreamError, e.to_string());
            out.extend(stream.fail(&err));
        }
        Bytes::from(out)
    }

    fn finish(&mut self) -> Bytes {
        let mut out = Vec::new();
        let (stream, salvage) = (&mut self.stream, &mut self.salvage);
        if let Some(l) = self.lines.finish() {
            match salvage {
                Some(s) => s.each_line(&l, |l| out.extend(stream.line(l))),
                None => out.extend(stream.line(&l)),
            }
        }
        if let Some(s) = salvage {
            s.finish_each(|l| out.extend(stream.line(l)));
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

    fn tool_calls_salvaged(&self) -> usize {
        self.salvage.as_ref().map_or(0, ChatSalvage::salvaged)
    }
}
