//! The response body on its way back: frames pass through one by one as they arrive,
//! counted and scanned for token counts; silence longer than `idle_timeout` or a broken
//! upstream ends the stream with an error line in the stream's own format; at the end
//! the request's [`Exchange`] is finished and its record written *before* the client
//! sees the stream complete. A [`Transform`] may rewrite the stream on the way (Ollama's
//! NDJSON into OpenAI SSE); token counts are then still read from what Ollama sent.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use protocol::error::{BridgeError, Reason};
use protocol::output::OutputCollector;
use protocol::tokens::TokenScanner;
use tokio::time::Sleep;

use super::record::{Exchange, Outcome, Written};

/// Errors inside response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body type of every answer.
pub type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// A complete body as the response body type (no record attached: for answers whose
/// record is already written, and for the metrics listener).
pub fn full(b: Bytes) -> RespBody {
    Full::new(b)
        .map_err(|n: Infallible| -> BoxError { match n {} })
        .boxed_unsync()
}

/// A stream that is only its last bytes, `tail`: the answer failed before any of
/// Ollama's body came (its head went early). `reason` goes to the record, which is
/// written before the client sees the end.
pub fn ended(tail: Bytes, reason: Reason, ex: Exchange, hold: Option<Box<dyn Send>>) -> RespBody {
    let empty = http_body_util::Empty::<Bytes>::new();
    // Never polled: the tail goes at once.
    let idle = Duration::from_secs(3600);
    let mut r = Relay::new(empty, StreamKind::Opaque, idle, ex, hold);
    r.outcome.failure = Some(reason);
    r.state = State::Tail(tail);
    r.boxed_unsync()
}

/// What a client is told when Ollama goes silent mid-answer.
pub fn idle_message(idle: Duration) -> String {
    format!("Ollama sent nothing for {idle:?} mid-answer (idle_timeout); the answer is incomplete")
}

/// How a failure after the headers is told to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// NDJSON: one more `{"error":"..."}` line.
    Ndjson,
    /// Server-sent events: one `data: {"error":{...}}` event.
    Sse,
    /// Anything else: the connection is cut (the client sees an incomplete body).
    Opaque,
}

impl StreamKind {
    /// Picks the kind from the response's content type.
    pub fn from_headers(h: &http::HeaderMap) -> StreamKind {
        let ct = h
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        match ct.unwrap_or("") {
            c if c.starts_with("application/x-ndjson") => StreamKind::Ndjson,
            c if c.starts_with("text/event-stream") => StreamKind::Sse,
            _ => StreamKind::Opaque,
        }
    }

    /// The trailing error frame for a failed stream, if this kind has one.
    pub fn error_frame(self, err: &BridgeError) -> Option<Bytes> {
        let mut v = match self {
            StreamKind::Ndjson => err.body(protocol::route::ErrorFormat::Ollama),
            StreamKind::Sse => {
                let mut s = b"data: ".to_vec();
                s.extend(err.body(protocol::route::ErrorFormat::OpenAi));
                s.extend_from_slice(b"\n");
                s
            }
            StreamKind::Opaque => return None,
        };
        v.push(b'\n');
        Some(Bytes::from(v))
    }
}

/// Rewrites a stream on its way through, frame by frame.
pub trait Transform: Send {
    /// The client's bytes for the next upstream bytes (empty: nothing to send yet).
    fn feed(&mut self, data: &[u8]) -> Bytes;
    /// The upstream ended: the client's last bytes.
    fn finish(&mut self) -> Bytes;
    /// The upstream failed: the client's last bytes (the error in the stream's format),
    /// or nothing when the rewritten stream is already complete.
    fn fail(&mut self, err: &BridgeError) -> Bytes;
    /// The rewritten stream ended with an error of its own (e.g. Ollama's error line).
    fn failed(&self) -> bool {
        false
    }
    /// Tool calls it recovered from the reply's text (tool-call salvage).
    fn tool_calls_salvaged(&self) -> usize {
        0
    }
}

enum State {
    Streaming,
    /// The last bytes to send before the end.
    Tail(Bytes),
    /// The record is being written; the stream ends after it.
    Acking(Written),
    Done,
}

/// The relaying body wrapper.
pub struct Relay<B> {
    inner: B,
    kind: StreamKind,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    scanner: TokenScanner,
    outcome: Outcome,
    exchange: Option<Exchange>,
    state: State,
    hold: Option<Box<dyn Send>>,
    transform: Option<Box<dyn Transform>>,
    output: Option<OutputCollector>,
}

impl<B> Relay<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    /// Wraps `inner`; finishes `exchange` at the end. `hold` lives until then (e.g. a
    /// concurrency permit).
    pub fn new(
        inner: B,
        kind: StreamKind,
        idle: Duration,
        exchange: Exchange,
        hold: Option<Box<dyn Send>>,
    ) -> Self {
        Relay {
            inner,
            kind,
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            scanner: TokenScanner::new(),
            outcome: Outcome::default(),
            exchange: Some(exchange),
            state: State::Streaming,
            hold,
            transform: None,
            output: None,
        }
    }

    /// Rewrites the stream with `t` (the scanner still reads the upstream's bytes).
    pub fn with_transform(mut self, t: Box<dyn Transform>) -> Self {
        self.transform = Some(t);
        self
    }

    /// Also assembles the assistant's text (at most `limit` bytes) for the finisher:
    /// only for `log_prompts = true`, as it parses every line.
    pub fn capture_output(mut self, limit: usize) -> Self {
        self.output = Some(OutputCollector::new(limit));
        self
    }

    fn fail(&mut self, err: BridgeError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        tracing::warn!(reason = err.reason.as_str(), error = %err.message, "stream ended early");
        self.outcome.failure = Some(err.reason);
        let tail = match &mut self.transform {
            // An opaque body (a non-streamed answer) has no error frame, rewritten or
            // not: the client sees the cut.
            Some(_) if self.kind == StreamKind::Opaque => None,
            Some(t) => Some(t.fail(&err)),
            None => self.kind.error_frame(&err),
        };
        match tail {
            Some(tail) => {
                self.state = State::Tail(tail);
                Poll::Pending // caller loops
            }
            None => {
                self.finish();
                self.state = State::Done;
                Poll::Ready(Some(Err(err.full_message().into())))
            }
        }
    }

    fn complete(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.finish() {
            Some(w) => {
                self.state = State::Acking(w);
                self.poll_ack(cx)
            }
            None => {
                self.state = State::Done;
                Poll::Ready(None)
            }
        }
    }

    fn poll_ack(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let State::Acking(w) = &mut self.state {
            if Pin::new(w).poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        self.state = State::Done;
        Poll::Ready(None)
    }
}

impl<B> Body for Relay<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Acking(..) => return this.poll_ack(cx),
                State::Tail(tail) => {
                    let tail = std::mem::take(tail);
                    this.outcome.bytes_out += tail.len() as u64;
                    this.state = State::Streaming;
                    // Complete after this frame: mark by finishing now, then Done on next poll.
                    this.state = match this.finish() {
                        Some(w) => State::Acking(w),
                        None => State::Done,
                    };
                    if tail.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(tail))));
                }
                State::Streaming => {}
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let next = tokio::time::Instant::now() + this.idle;
                    this.idle_timer.as_mut().reset(next);
                    if let Some(d) = frame.data_ref() {
                        this.scanner.feed(d);
                        if let Some(c) = &mut this.output {
                            c.feed(d);
                        }
                    }
                    let frame = match (&mut this.transform, frame.data_ref()) {
                        (None, _) => frame,
                        (Some(t), Some(d)) => Frame::data(t.feed(d)),
                        (Some(_), None) => continue,
                    };
                    match frame.data_ref() {
                        Some(d) if d.is_empty() => continue,
                        Some(d) => this.outcome.bytes_out += d.len() as u64,
                        None => {}
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(e))) => {
                    let err = BridgeError::new(
                        Reason::UpstreamError,
                        format!("Ollama's answer broke off mid-stream: {e}"),
                    );
                    match this.fail(err) {
                        Poll::Pending => continue,
                        p => return p,
                    }
                }
                Poll::Ready(None) => {
                    if let Some(t) = &mut this.transform {
                        let tail = t.finish();
                        if t.failed() && this.outcome.failure.is_none() {
                            this.outcome.failure = Some(Reason::UpstreamError);
                        }
                        this.state = State::Tail(tail);
                        continue;
                    }
                    return this.complete(cx);
                }
                Poll::Pending => {
                    if this.idle_timer.as_mut().poll(cx).is_ready() {
                        let err =
                            BridgeError::new(Reason::UpstreamTimeout, idle_message(this.idle));
                        match this.fail(err) {
                            Poll::Pending => continue,
                            p => return p,
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        // Unknown on purpose: the response goes out chunked, so the client sees it
        // complete only after the audit record is written.
        SizeHint::default()
    }
}

impl<B> Relay<B> {
    /// Finishes the exchange (once): the record of what the stream did.
    fn finish(&mut self) -> Option<Written> {
        self.hold.take();
        let ex = self.exchange.take()?;
        self.settle();
        Some(ex.finish_stream(std::mem::take(&mut self.outcome)))
    }

    /// Moves what the scanners saw into the outcome.
    fn settle(&mut self) {
        self.outcome.tokens = self.scanner.finish();
        self.outcome.chunks = self.scanner.chunks();
        self.outcome.upstream_error = self.scanner.saw_error();
        self.outcome.output = self.output.take().map(OutputCollector::finish);
        if let Some(t) = &self.transform {
            self.outcome.tool_calls_salvaged = t.tool_calls_salvaged() as u64;
        }
    }
}

impl<B> Drop for Relay<B> {
    fn drop(&mut self) {
        if self.exchange.is_some() {
            // Dropped before the end: the client went away (or the connection broke).
            self.outcome.client_closed = true;
            drop(self.finish());
        }
    }
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
