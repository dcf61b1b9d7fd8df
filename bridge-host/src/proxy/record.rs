//! A request's audit record over its life: started when the head arrives, owed while
//! the request is handled (a fallback is written if the request is cut off), finished
//! by the response body's finisher once the answer has passed, or written before a
//! HEAD answer leaves.

use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Request, Response};
use hyper::body::Incoming;
use protocol::audit::{rfc3339_millis, AuditRecord, Decision, Peer};
use protocol::error::Reason;

use crate::observe::audit_log::ACK_WAIT;
use crate::proxy::relay::{Finisher, Outcome, RespBody};
use crate::proxy::{full, set_request_id, strip_hop_by_hop, SandboxCtx, Shared};

/// The record of a request whose head just arrived.
pub fn start_record<B>(ctx: &SandboxCtx, peer: Option<Peer>, req: &Request<B>) -> AuditRecord {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    AuditRecord {
        ts: rfc3339_millis(now_ms),
        request_id: ctx.shared.request_id(),
        sandbox: ctx.sandbox.name.to_string(),
        peer,
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        endpoint: None,
        model: None,
        decision: Decision::Deny,
        reason: None,
        num_ctx_requested: None,
        num_ctx_sent: None,
        status: 0,
        bytes_in: 0,
        bytes_out: 0,
        duration_ms: 0,
        prompt_tokens: None,
        completion_tokens: None,
        prompt: None,
        output: None,
        output_truncated: false,
    }
}

/// The record a request owes until it is written or handed to the response body: if
/// the request's future is dropped first (the client's connection failed, or shutdown's
/// grace period ended), a record saying so is written instead. Never two records: the
/// audit log writes this one only if no other was submitted for the id.
pub struct Owed<'a> {
    shared: &'a Shared,
    pub rec: AuditRecord,
    start: Instant,
    armed: bool,
}

impl<'a> Owed<'a> {
    pub fn new(shared: &'a Shared, rec: AuditRecord, start: Instant) -> Self {
        shared.audit.owe(&rec.request_id);
        Owed {
            shared,
            rec,
            start,
            armed: true,
        }
    }

    /// The request answered: its record is written, or the response body's finisher
    /// will write it.
    pub fn disarm(&mut self) {
        self.armed = false;
        self.shared.audit.forget(&self.rec.request_id);
    }
}

impl Drop for Owed<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let reason = if self.shared.draining.load(Ordering::Relaxed) {
            Reason::ShuttingDown
        } else {
            Reason::ClientClosed
        };
        self.rec.status = 0;
        self.rec.reason = Some(reason.as_str().to_owned());
        self.rec.duration_ms = self.start.elapsed().as_millis() as u64;
        self.shared.record_owed(&self.rec);
    }
}

/// Builds the finisher that completes and writes the audit record at the stream's end.
pub fn finisher(ctx: &SandboxCtx, mut rec: AuditRecord, start: Instant) -> Finisher {
    let shared = ctx.shared.clone();
    // The request stays in flight until the finisher runs (or is dropped).
    let flight = shared.metrics.in_flight_guard(ctx.sandbox.name.as_str());
    Box::new(move |o: Outcome| {
        let _flight = flight;
        rec.bytes_out = o.bytes_out;
        rec.prompt_tokens = o.tokens.prompt;
        rec.completion_tokens = o.tokens.completion;
        rec.duration_ms = start.elapsed().as_millis() as u64;
        let reason = if let Some(r) = o.failure {
            Some(r)
        } else if o.client_closed && shared.draining.load(Ordering::Relaxed) {
            Some(Reason::ShuttingDown)
        } else if o.client_closed {
            Some(Reason::ClientClosed)
        } else if o.upstream_error {
            // Ollama's own `{"error":...}` line after a 200: the answer failed.
            Some(Reason::UpstreamError)
        } else {
            None
        };
        rec.reason = reason.map(|r| r.as_str().to_owned());
        if let Some((text, cut)) = o.output {
            rec.output = Some(text);
            rec.output_truncated = cut;
        }
        tracing::debug!(request_id = %rec.request_id, status = rec.status, bytes_out = rec.bytes_out, "request done");
        shared.record(&rec, true)
    })
}

/// Answers a HEAD request: hyper sends no body (and never polls one), so the record
/// is written here, before the headers leave.
pub async fn head_only(
    ctx: &SandboxCtx,
    resp: Response<Incoming>,
    mut rec: AuditRecord,
    start: Instant,
) -> Response<RespBody> {
    let (mut parts, _body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // A listing's length would be the unfiltered one.
    parts.headers.remove(header::CONTENT_LENGTH);
    set_request_id(&mut parts.headers, &rec.request_id);
    rec.status = parts.status.as_u16();
    rec.duration_ms = start.elapsed().as_millis() as u64;
    if let Some(ack) = ctx.shared.record(&rec, true) {
        let _ = tokio::time::timeout(ACK_WAIT, ack).await;
    }
    Response::from_parts(parts, full(Bytes::new()))
}
