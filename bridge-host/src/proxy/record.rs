//! One owner for each request's audit record: an [`Exchange`] is created when the request
//! arrives (or when the HTTP parser rejected it), carried through check → forward →
//! relay, and finished exactly once. Finishing writes the record and counts it in the
//! metrics; the answer completes only after the record is written (or, when it had to
//! be queued for the writer thread, [`ACK_WAIT`] passed). If nobody finishes it — the client went away, the grace period of a shutdown
//! ended, a task panicked — its `Drop` writes the record of what happened.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use protocol::audit::{AuditRecord, Decision, Peer};
use protocol::error::Reason;
use protocol::tokens::Tokens;
use tokio::sync::oneshot;
use tokio::time::Sleep;

use super::ctx::{SandboxCtx, Shared};
use super::pool::ServedBy;
use crate::limits::queue::Ticket;
use crate::observe::audit_log::ACK_WAIT;
use crate::observe::metrics::InFlight;
use crate::os::clock::unix_ms;

/// What a streamed answer did, told to [`Exchange::finish_stream`] at its end.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub bytes_out: u64,
    pub tokens: Tokens,
    /// Set when the stream did not end cleanly.
    pub failure: Option<Reason>,
    /// True when the client went away before the end.
    pub client_closed: bool,
    /// True when Ollama wrote an `{"error":...}` line into the stream.
    pub upstream_error: bool,
    /// With output capture: the assistant text and whether it was cut.
    pub output: Option<(String, bool)>,
    /// Tool calls recovered from the reply's text.
    pub tool_calls_salvaged: u64,
    /// Chunks (lines) of Ollama's answer seen: the estimate of a completion cut off
    /// before its count.
    pub chunks: u64,
}

/// A request and its audit record, from arrival to the one write of the record.
pub struct Exchange {
    shared: Arc<Shared>,
    /// The record, filled in as facts become known.
    pub rec: AuditRecord,
    start: Instant,
    /// Counts the request in flight until the record is written.
    flight: Option<InFlight>,
    written: bool,
    /// The bridge already sent the client this status (early headers): a request cut
    /// off from now on keeps it in its record.
    head_sent: Option<u16>,
    /// The request's place in the upstream's fair queue: its slot is given back when the
    /// record is written.
    ticket: Option<Arc<Ticket>>,
    /// A model request: what its answer cost is charged to the sandbox's token budget
    /// when the record is written (`Some(completes)`: whether it has completion tokens).
    metered: Option<bool>,
    /// Chunks of the answer seen (for the estimate of a cut-off answer).
    chunks: u64,
    /// The upstream server's name for the record (`Exchange::served_by`).
    served_by: Option<ServedBy>,
}

impl Exchange {
    /// A request whose head just arrived on `ctx`'s listener.
    pub fn begin(ctx: &SandboxCtx, peer: Option<Peer>, method: &str, path: &str) -> Exchange {
        let rec = AuditRecord::new(
            unix_ms(),
            ctx.shared.request_id(),
            ctx.sandbox.name.to_string(),
            peer,
            method.to_owned(),
            path.to_owned(),
        );
        let flight = ctx
            .shared
            .metrics
            .in_flight_guard(ctx.sandbox.name.as_str());
        Exchange {
            shared: ctx.shared.clone(),
            rec,
            start: Instant::now(),
            flight: Some(flight),
            written: false,
            head_sent: None,
            ticket: None,
            metered: None,
            chunks: 0,
            served_by: None,
        }
    }

    /// A request the HTTP parser rejected before the service saw it: `rec` is complete
    /// (its time and duration measured from the connection's bytes); it is never in flight.
    pub fn rejected(ctx: &SandboxCtx, rec: AuditRecord) -> Exchange {
        Exchange {
            shared: ctx.shared.clone(),
            rec,
            start: Instant::now(),
            flight: None,
            written: false,
            head_sent: None,
            ticket: None,
            metered: None,
            chunks: 0,
            served_by: None,
        }
    }

    /// An exchange on `shared` alone (unit tests of the relay).
    #[cfg(test)]
    pub fn for_test(shared: Arc<Shared>) -> Exchange {
        let id = shared.request_id();
        let rec = AuditRecord::new(
            unix_ms(),
            id,
            "t".into(),
            None,
            "POST".into(),
            "/api/chat".into(),
        );
        Exchange {
            shared,
            rec,
            start: Instant::now(),
            flight: None,
            written: false,
            head_sent: None,
            ticket: None,
            metered: None,
            chunks: 0,
            served_by: None,
        }
    }

    /// A new record id from the daemon's counter (for records built before `begin`).
    pub fn request_id(ctx: &SandboxCtx) -> String {
        ctx.shared.request_id()
    }

    /// The record's id (also sent to the client as a response header).
    pub fn id(&self) -> &str {
        &self.rec.request_id
    }

    /// When the request arrived at the bridge.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// The bridge sent the client `status` and the headers itself, before Ollama's
    /// answer: the record says so whatever happens next.
    pub fn head_sent(&mut self, status: u16) {
        self.rec.status = status;
        self.head_sent = Some(status);
    }

    /// The request goes to the upstream server named in `s` (a retry may change it):
    /// the record's `upstream` when it is written.
    pub fn served_by(&mut self, s: ServedBy) {
        self.served_by = Some(s);
    }

    /// The request takes a turn in the upstream's queue with `t`.
    pub fn hold_ticket(&mut self, t: Arc<Ticket>) {
        self.ticket = Some(t);
    }

    /// The policy allowed the request.
    pub fn allow(&mut self) {
        self.rec.decision = Decision::Allow;
    }

    /// A model request going to Ollama: its answer is charged to the sandbox's tokens.
    pub fn meter(&mut self, route: &protocol::Route) {
        self.metered = Some(protocol::budget::completes(route));
    }

    /// Ends the exchange with a complete answer of `status` (the body's length is
    /// `bytes_out`): writes the record and waits until it is in the file.
    pub async fn finish(mut self, status: u16, reason: Option<Reason>, bytes_out: u64) {
        self.rec.status = status;
        self.rec.reason = reason;
        self.rec.bytes_out = bytes_out;
        if reason.is_some_and(Reason::is_denial) {
            self.rec.decision = Decision::Deny;
        }
        if self.flight.is_some() {
            self.rec.duration_ms = self.start.elapsed().as_millis() as u64;
        }
        self.write().await;
    }

    /// Ends the exchange of a streamed answer with what the stream did. The returned
    /// [`Written`] resolves once the record is in the file; the stream completes after it.
    pub fn finish_stream(mut self, o: Outcome) -> Written {
        let reason = if let Some(r) = o.failure {
            Some(r)
        } else if o.client_closed {
            Some(self.cut_off())
        } else if o.upstream_error {
            // Ollama's own `{"error":...}` line after a 200: the answer failed.
            Some(Reason::UpstreamError)
        } else {
            None
        };
        self.chunks = o.chunks;
        let rec = &mut self.rec;
        rec.reason = reason;
        rec.bytes_out = o.bytes_out;
        rec.prompt_tokens = o.tokens.prompt;
        rec.completion_tokens = o.tokens.completion;
        rec.duration_ms = self.start.elapsed().as_millis() as u64;
        if o.tool_calls_salvaged > 0 {
            rec.tool_calls_salvaged = Some(o.tool_calls_salvaged);
        }
        if let Some((text, cut)) = o.output {
            rec.output = Some(text);
            rec.output_truncated = cut;
        }
        tracing::debug!(request_id = %rec.request_id, status = rec.status, bytes_out = rec.bytes_out, "request done");
        self.write()
    }

    /// Why a request nobody finished ended.
    fn cut_off(&self) -> Reason {
        if self.shared.draining.load(Ordering::Relaxed) {
            Reason::ShuttingDown
        } else {
            Reason::ClientClosed
        }
    }

    /// The one place a record is written: counted in the metrics, appended to the audit
    /// file (or queued for its writer thread); the request leaves the in-flight count.
    fn write(&mut self) -> Written {
        self.written = true;
        if let Some(s) = &self.served_by {
            self.rec.upstream = Some(s.lock().unwrap_or_else(|p| p.into_inner()).clone());
        }
        // A model request that never had its turn at Ollama (it left the queue, or its
        // wait ran out) cost nothing: it is not charged to the token budget.
        let mut had_turn = true;
        if let Some(t) = self.ticket.take() {
            self.rec.queued_ms = t.waited_ms();
            had_turn = self.rec.queued_ms.is_some();
            t.release();
        }
        if had_turn {
            self.charge();
        }
        self.shared.metrics.observe(&self.rec);
        let ack = self.shared.audit.submit(&self.rec);
        self.flight.take();
        Written {
            ack,
            deadline: None,
        }
    }
}

impl Exchange {
    /// Charges a metered request's answer to its sandbox's tokens: Ollama's counts, or
    /// an estimate for what they do not cover ([`protocol::budget::charge`]; the record
    /// says so in `tokens_estimated`). Nothing is charged without counts when Ollama
    /// never had the request (refused by the bridge, Ollama unreachable) or answered it
    /// with an error status instead of an answer.
    fn charge(&mut self) {
        let Some(completes) = self.metered else {
            return;
        };
        let r = &mut self.rec;
        let counted = r.prompt_tokens.is_some() || r.completion_tokens.is_some();
        // Ollama's own error status: after early headers in `upstream_status`, else in
        // `status` (the bridge's own failures have their reasons).
        let ollama_error = match r.upstream_status {
            Some(s) => s >= 300,
            None => matches!(r.reason, None | Some(Reason::UpstreamError)) && r.status >= 300,
        };
        let never_ran = ollama_error
            || r.reason
                .is_some_and(|x| x.is_denial() || x == Reason::UpstreamUnreachable);
        if !counted && never_ran {
            return;
        }
        let c = protocol::budget::charge(
            r.prompt_tokens,
            r.completion_tokens,
            r.bytes_in,
            self.chunks,
            completes,
        );
        if c.estimated {
            r.tokens_estimated = Some(c.tokens);
        }
        self.shared.tokens.charge(&r.sandbox, c.tokens);
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if self.written {
            return;
        }
        // Nobody finished it: the request's future was dropped (the client's connection
        // failed, or shutdown's grace period ended) or a task panicked.
        self.rec.status = self.head_sent.unwrap_or(0);
        self.rec.reason = Some(self.cut_off());
        self.rec.duration_ms = self.start.elapsed().as_millis() as u64;
        drop(self.write());
    }
}

/// Resolves once a record is written (at once when the request's task appended it, or
/// it could not be queued), or after [`ACK_WAIT`]: the durability guarantee, bounded so
/// a stuck disk never holds an answer forever.
pub struct Written {
    ack: Option<oneshot::Receiver<()>>,
    /// Started at the first poll that has to wait.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl Future for Written {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(ack) = this.ack.as_mut() else {
            return Poll::Ready(());
        };
        if Pin::new(ack).poll(cx).is_ready() {
            this.ack = None;
            return Poll::Ready(());
        }
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(ACK_WAIT)));
        if deadline.as_mut().poll(cx).is_ready() {
            this.ack = None;
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// An audit log in a temp dir and exchanges on it, for unit tests of what finishes them
/// (the relay, the early answer): `records()` closes the log and reads what was written.
#[cfg(test)]
pub struct TestAudit {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    shared: Arc<Shared>,
}

#[cfg(test)]
impl TestAudit {
    pub fn new() -> TestAudit {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = crate::observe::audit_log::AuditLog::open(&path).unwrap();
        TestAudit {
            _dir: dir,
            path,
            shared: Arc::new(Shared::new(log)),
        }
    }

    /// A new exchange whose record goes to this log.
    pub fn exchange(&self) -> Exchange {
        Exchange::for_test(self.shared.clone())
    }

    /// Every record written so far (the log is flushed first).
    pub fn records(&self) -> Vec<AuditRecord> {
        self.shared.audit.close(std::time::Duration::from_secs(10));
        std::fs::read_to_string(&self.path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[cfg(test)]
mod charge_tests {
    use super::*;
    use protocol::tokens::Tokens;
    use protocol::Route;

    /// Each exchange's record and what the sandbox was charged for it.
    #[tokio::test]
    async fn answers_are_charged_their_counts_or_an_estimate_and_errors_nothing() {
        let t = TestAudit::new();
        let used = || t.shared.tokens.used_in_the_hour("t");
        // Counted: the counts.
        let mut ex = t.exchange();
        ex.meter(&Route::Chat);
        ex.rec.bytes_in = 400;
        let tokens = Tokens {
            prompt: Some(26),
            completion: Some(290),
        };
        ex.finish_stream(Outcome {
            tokens,
            chunks: 9,
            ..Outcome::default()
        })
        .await;
        assert_eq!(used(), 316);
        // Cut off before the counts: a quarter of the body, a token per chunk seen.
        let mut ex = t.exchange();
        ex.meter(&Route::Chat);
        ex.rec.bytes_in = 400;
        ex.finish_stream(Outcome {
            client_closed: true,
            chunks: 3,
            ..Outcome::default()
        })
        .await;
        assert_eq!(used(), 316 + 103);
        // Ollama answered an error status; the bridge refused; not a model request;
        // Ollama unreachable: nothing.
        let mut ex = t.exchange();
        ex.meter(&Route::Chat);
        ex.rec.bytes_in = 400;
        ex.rec.status = 404;
        ex.finish_stream(Outcome::default()).await;
        let mut ex = t.exchange();
        ex.meter(&Route::Chat);
        ex.finish(429, Some(Reason::BudgetExhausted), 10).await;
        let mut ex = t.exchange();
        ex.rec.bytes_in = 400;
        ex.finish_stream(Outcome {
            client_closed: true,
            ..Outcome::default()
        })
        .await;
        let mut ex = t.exchange();
        ex.meter(&Route::Generate);
        ex.rec.bytes_in = 400;
        ex.finish(502, Some(Reason::UpstreamUnreachable), 10).await;
        assert_eq!(used(), 316 + 103);
        // Dropped unfinished (shutdown's grace ended): the estimate.
        let mut ex = t.exchange();
        ex.meter(&Route::Embed);
        ex.rec.bytes_in = 40;
        drop(ex);
        assert_eq!(used(), 316 + 103 + 10);
        let recs = t.records();
        let estimated: Vec<Option<u64>> = recs.iter().map(|r| r.tokens_estimated).collect();
        assert_eq!(
            estimated,
            [None, Some(103), None, None, None, None, Some(10)]
        );
    }
}
