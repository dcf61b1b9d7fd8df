//! A sandbox listener's accept loop and its connections: `max_connections` (over it, a
//! short 503 and a close, never a client left in the backlog), hyper's head limits
//! (`max_headers`, `max_header_bytes`), the client timeouts of [`super::deadline`], and
//! the records of requests rejected before the service saw them. Connections a guest
//! handed over ([`super::handoff`]) join here and are served the same way. The loop
//! backs off on accept errors and never dies of one.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body::Body as _;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use protocol::audit::Peer;
use protocol::backoff::Backoff;
use protocol::error::{BridgeError, Reason};
use protocol::framing::Flaw;
use protocol::route::ErrorFormat;
use protocol::ListenAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::Instrument;

use super::conn::{Heads, Observed, Seen, Served};
use super::deadline::{expired, Clock, Expiry, Tracked};
use super::handoff::{self, Handed, Sniffed};
use crate::net::hangup::Hangup;
use crate::net::listen::{unix_conn, Accepted, Conn, Listener};
use crate::proxy::{current, handle, CtxCell, SandboxCtx};

/// Refused connections being answered at once, per listener; beyond this, excess
/// connections are closed without the 503.
const REFUSING: usize = 64;
/// Longest time spent answering one refused connection.
const REFUSE_WAIT: Duration = Duration::from_secs(2);
/// At most one "connection limit reached" warning per listener this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Refusals of one listener: bounded work, and a warning that does not flood the log.
struct Refusals {
    slots: Arc<Semaphore>,
    since_warn: u64,
    last_warn: Option<Instant>,
}

/// What the loop takes in: a connection it accepted, or one a guest handed over.
enum Arrival {
    Accepted(Accepted),
    Handed(Handed),
}

impl Arrival {
    fn into_conn(self) -> Conn {
        match self {
            Arrival::Accepted(Accepted::Unix(s, _)) => Box::new(s),
            Arrival::Accepted(Accepted::Other(c, _)) => c,
            Arrival::Handed(h) => Box::new(h.stream),
        }
    }
}

pub(crate) async fn accept_loop(
    listener: Listener,
    cell: CtxCell,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new();
    let mut refusals = Refusals {
        slots: Arc::new(Semaphore::new(REFUSING)),
        since_warn: 0,
        last_warn: None,
    };
    // Connections handed over on control connections come back here, so that only this
    // loop adds connections and the check and the count cannot race.
    let (handed_tx, mut handed_rx) = mpsc::channel::<Handed>(1);
    let controls = Arc::new(Semaphore::new(handoff::MAX_CONTROLS));
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            a = listener.accept_raw() => a.map(Arrival::Accepted),
            Some(h) = handed_rx.recv() => Ok(Arrival::Handed(h)),
        };
        let ctx = current(&cell);
        let arrival = match accepted {
            Ok(a) => {
                backoff.succeeded();
                a
            }
            Err(e) => {
                tracing::warn!(sandbox = %ctx.sandbox.name, error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff.failed()).await;
                continue;
            }
        };
        if matches!(arrival, Arrival::Handed(_)) {
            ctx.shared.metrics.handoff.handed(ctx.sandbox.name.as_str());
        }
        // Only this loop adds connections, so the check and the count cannot race.
        let open = ctx.limits.connections.load(Ordering::Relaxed);
        if open >= ctx.sandbox.limits.max_connections as usize {
            refuse(arrival.into_conn(), &ctx, open, &mut refusals);
            continue;
        }
        ctx.limits.connections.fetch_add(1, Ordering::Relaxed);
        let open = OpenGuard(ctx.limits.connections.clone());
        let clock = Clock::new();
        // Waiting (for a max_concurrent slot, or in the upstream's fair queue) is cut
        // short when the client leaves: that needs a watch.
        let watch = ctx.sandbox.limits.queue_timeout.is_some()
            || ctx.config.servers.iter().any(|s| s.max_parallel.is_some());
        let peer = match arrival {
            Arrival::Accepted(Accepted::Unix(s, peer))
                if matches!(ctx.sandbox.listen, ListenAddr::Unix(_)) =>
            {
                // The first byte tells a hand-off control connection from HTTP.
                let wait = ctx.sandbox.limits.request_header_timeout;
                // Only a weak handle while waiting: shutdown takes the drain tracker
                // once every strong one is gone (server::drain_tracker), and a
                // connection that was still silent then is not served.
                let (cell, graceful) = (cell.clone(), Arc::downgrade(&graceful));
                let (controls, to, stop) = (controls.clone(), handed_tx.clone(), stop.clone());
                tokio::spawn(async move {
                    match handoff::sniff(s, wait).await {
                        Sniffed::Http(s) => {
                            let ctx = current(&cell);
                            let Some(graceful) = graceful.upgrade() else {
                                return;
                            };
                            if let Ok((io, h)) = unix_conn(s, watch) {
                                serve(io, peer, h, open, clock, &cell, &ctx, &graceful);
                            }
                        }
                        Sniffed::Control(s) => {
                            drop(open); // counted among the control connections instead
                            handoff::control(s, peer, cell, controls, to, stop).await;
                        }
                        Sniffed::Gone(true) => handoff::bad_preamble(&current(&cell), peer),
                        Sniffed::Gone(false) => {}
                    }
                });
                continue;
            }
            Arrival::Accepted(Accepted::Unix(s, peer)) => match unix_conn(s, watch) {
                Ok((io, h)) => Some((io, peer, h)),
                Err(e) => {
                    tracing::warn!(sandbox = %ctx.sandbox.name, error = %e, "cannot watch the connection; closed");
                    None
                }
            },
            Arrival::Accepted(Accepted::Other(io, peer)) => Some((io, peer, None)),
            Arrival::Handed(h) => {
                let tcp = if watch {
                    Hangup::watch_tcp(h.stream).map(|(s, w)| (s, Some(w)))
                } else {
                    Ok((h.stream, None))
                };
                match tcp {
                    Ok((s, w)) => Some((Box::new(s) as Conn, h.peer, w)),
                    Err(e) => {
                        tracing::warn!(sandbox = %ctx.sandbox.name, error = %e, "cannot watch the handed connection; closed");
                        None
                    }
                }
            }
        };
        if let Some((io, peer, hangup)) = peer {
            serve(io, peer, hangup, open, clock, &cell, &ctx, &graceful);
        }
    }
    listener.cleanup();
}

/// Serves one connection in its own task; `open` counts it until the task ends, and
/// `clock` started at its accept.
#[allow(clippy::too_many_arguments)]
fn serve(
    io: Conn,
    peer: Option<Peer>,
    hangup: Option<Hangup>,
    open: OpenGuard,
    clock: Arc<Clock>,
    cell: &CtxCell,
    ctx: &SandboxCtx,
    graceful: &GracefulShutdown,
) {
    let limits = ctx.sandbox.limits;
    let served = Served::default();
    let heads = Heads::new(limits.max_header_bytes);
    let (counter, cell2, clock2, heads2) =
        (served.clone(), cell.clone(), clock.clone(), heads.clone());
    let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        counter.add();
        if let Some(h) = &hangup {
            req.extensions_mut().insert(h.clone());
        }
        // Framing hyper resolved in the head is refused by the gate, and the connection
        // closes after the refusal.
        let flaw = heads2.next_request(&req);
        if let Some(f) = flaw {
            if f == Flaw::Unverified {
                tracing::warn!(peer = ?peer, "request framing not verified (the connection's earlier bytes were not followed); refusing");
            }
            req.extensions_mut().insert(f);
        }
        let http10 = req.version() == http::Version::HTTP_10;
        clock2.on_request();
        let clock = clock2.clone();
        // Each request is decided under the context current when it arrives.
        let answer = handle(current(&cell2), peer, req);
        async move {
            let mut resp = answer.await?;
            // HTTP/1.0 has no chunked encoding: an answer of unknown length ends with
            // the close, and says so. (Marked as HTTP/1.0, else hyper would add
            // `keep-alive` to it.) One with a length keeps the connection if asked to.
            let close_delimited = http10 && resp.body().size_hint().exact().is_none();
            if close_delimited {
                *resp.version_mut() = http::Version::HTTP_10;
            }
            if flaw.is_some() || close_delimited {
                let v = http::HeaderValue::from_static("close");
                resp.headers_mut().insert(http::header::CONNECTION, v);
            }
            Ok::<_, std::convert::Infallible>(resp.map(|b| Tracked::new(b, clock)))
        }
    });
    let (io, back) = Observed::new(io, clock.clone(), heads);
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(None) // super::deadline keeps both client timeouts
        .keep_alive(!limits.keepalive_timeout.is_zero())
        .half_close(true)
        .max_buf_size(limits.max_header_bytes)
        .max_header_size(limits.max_header_bytes);
    if limits.max_headers != protocol::limits::DEFAULT_MAX_HEADERS {
        // (hyper allocates the header array per request when it is not its default.)
        b.max_headers(limits.max_headers);
    }
    let conn = graceful.watch(b.serve_connection(TokioIo::new(io), svc));
    let span = tracing::debug_span!("conn", sandbox = %ctx.sandbox.name, peer = ?peer);
    let cell = cell.clone();
    tokio::spawn(
        async move {
            let _open = open;
            let watchdog = expired(
                clock,
                limits.request_header_timeout,
                limits.keepalive_timeout,
            );
            // The connection (and the stream it wraps) is dropped at the end of this
            // statement, which hands the stream back below.
            let ended = tokio::select! {
                r = conn => Ok(r),
                e = watchdog => Err(e),
            };
            let stream = back.await.ok();
            let seen = stream.as_ref().map(|s| &s.1);
            match ended {
                Ok(Ok(())) => {}
                Ok(Err(e)) => record_rejection(&current(&cell), peer, &e, seen, served.get()).await,
                Err(Expiry::Head) => {
                    let ctx = current(&cell);
                    tracing::info!(sandbox = %ctx.sandbox.name, timeout = ?limits.request_header_timeout, "request head not complete in time (request_header_timeout); closing");
                    write_record(&ctx, peer, seen, served.get(), 0, Reason::RequestTimeout, None)
                        .await;
                }
                Err(Expiry::Idle) => tracing::debug!("idle connection closed (keepalive_timeout or request_header_timeout)"),
            }
            // The client sees the close only now, after the record is written.
            if let Some((mut io, _)) = stream {
                let _ = tokio::time::timeout(REFUSE_WAIT, io.shutdown()).await;
            }
        }
        .instrument(span),
    );
}

/// Counts a connection as open until its task ends.
struct OpenGuard(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers a connection over `max_connections` with a 503 and closes it. Not a parsed
/// request, so no audit record: counted in `connections_refused`, and a warning at most
/// every [`WARN_EVERY`].
fn refuse(mut io: Conn, ctx: &SandboxCtx, open: usize, r: &mut Refusals) {
    let max = ctx.sandbox.limits.max_connections;
    ctx.shared
        .metrics
        .connection_refused(ctx.sandbox.name.as_str());
    r.since_warn += 1;
    if r.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
        tracing::warn!(sandbox = %ctx.sandbox.name, open, max_connections = max, refused = r.since_warn, "connection limit reached: answering new connections with 503");
        r.since_warn = 0;
        r.last_warn = Some(Instant::now());
    }
    let Ok(slot) = r.slots.clone().try_acquire_owned() else {
        return; // already answering many: close this one at once
    };
    let msg = format!(
        "sandbox \"{}\" has {open} open connections (max_connections); close idle connections or raise max_connections",
        ctx.sandbox.name
    );
    let resp = BridgeError::new(Reason::ConnectionLimit, msg).raw_http(ErrorFormat::Ollama);
    tokio::spawn(async move {
        let _slot = slot;
        let _ = tokio::time::timeout(REFUSE_WAIT, async {
            io.write_all(&resp).await?;
            io.shutdown().await?;
            // Read what the client sent (a little), so closing does not reset the answer.
            let mut sink = [0u8; 4096];
            let mut left: usize = 64 * 1024;
            while left > 0 {
                match io.read(&mut sink).await? {
                    0 => break,
                    n => left = left.saturating_sub(n),
                }
            }
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

/// Writes the record of a request hyper rejected itself, if the error means one.
async fn record_rejection(
    ctx: &SandboxCtx,
    peer: Option<Peer>,
    e: &hyper::Error,
    seen: Option<&Seen>,
    served: u64,
) {
    let empty = Seen::default();
    let Some((status, reason)) = super::conn::rejection(e, seen.unwrap_or(&empty), served) else {
        tracing::debug!(error = %e, "connection closed with error");
        return;
    };
    write_record(ctx, peer, seen, served, status, reason, Some(e)).await;
}

async fn write_record(
    ctx: &SandboxCtx,
    peer: Option<Peer>,
    seen: Option<&Seen>,
    served: u64,
    status: u16,
    reason: Reason,
    e: Option<&hyper::Error>,
) {
    let empty = Seen::default();
    let ex = super::conn::rejected(ctx, peer, seen.unwrap_or(&empty), served);
    let error = e.map(ToString::to_string);
    let rec = &ex.rec;
    tracing::info!(sandbox = %rec.sandbox, request_id = %rec.request_id, method = %rec.method, path = %rec.path, status, reason = reason.as_str(), error = ?error, "rejected before the request was parsed");
    ex.finish(status, Some(reason), 0).await;
}
