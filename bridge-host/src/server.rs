//! Listener, connection, request: the accept loop per sandbox owns its context, spawns
//! a task per connection, backs off on accept errors and never dies of one; shutdown
//! stops accepting, then lets in-flight requests finish within a grace period.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use protocol::config::Config;
use tokio::sync::watch;
use tracing::Instrument;

use crate::audit::{AuditLog, ACK_WAIT};
use crate::conn::{Observed, Served};
use crate::listen::{ListenError, Listener};
use crate::service::{handle, SandboxCtx, Shared};

/// Time a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A bound daemon, not yet serving.
pub struct Server {
    listeners: Vec<(Listener, Arc<SandboxCtx>)>,
    shared: Arc<Shared>,
    metrics: Option<MetricsListener>,
}

/// The opt-in Prometheus listener (host-only).
enum MetricsListener {
    Tcp(tokio::net::TcpListener),
    Unix(Listener),
}

/// How `run` ends.
pub struct Shutdown {
    /// Resolves when the daemon should stop accepting and drain.
    pub signal: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    /// Longest wait for in-flight requests after the signal.
    pub grace: Duration,
}

impl Server {
    /// Opens the audit log and every listener; nothing is served yet.
    pub fn bind(config: Config) -> anyhow::Result<Server> {
        let audit = AuditLog::open(&config.audit.path)?;
        let config = Arc::new(config);
        let shared = Arc::new(Shared::new(config.clone(), audit));
        let mut listeners = Vec::new();
        for sb in &config.sandboxes {
            let l = Listener::bind(&sb.listen, sb.socket_mode, sb.socket_owner)
                .map_err(|e: ListenError| anyhow::anyhow!("sandbox \"{}\": {e}", sb.name))?;
            listeners.push((l, Arc::new(SandboxCtx::new(sb.clone(), shared.clone()))));
        }
        let metrics = match &config.metrics {
            None => None,
            Some(protocol::config::MetricsListen::Tcp(a)) => {
                let std = std::net::TcpListener::bind(a)
                    .map_err(|e| anyhow::anyhow!("[metrics] listen {a}: {e}"))?;
                std.set_nonblocking(true)?;
                Some(MetricsListener::Tcp(tokio::net::TcpListener::from_std(
                    std,
                )?))
            }
            Some(protocol::config::MetricsListen::Unix(p)) => {
                let l = Listener::bind(&protocol::ListenAddr::Unix(p.clone()), 0o600, None)
                    .map_err(|e| anyhow::anyhow!("[metrics] listen: {e}"))?;
                Some(MetricsListener::Unix(l))
            }
        };
        Ok(Server {
            listeners,
            shared,
            metrics,
        })
    }

    /// The audit log handle (for SIGHUP reopen).
    pub fn audit(&self) -> AuditLog {
        self.shared.audit.clone()
    }

    /// Serves until the shutdown signal, then drains.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let graceful = Arc::new(GracefulShutdown::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut loops = Vec::new();
        for (listener, ctx) in self.listeners {
            // Show the port actually bound (VMADDR_PORT_ANY picks one).
            let shown = match listener.vsock_port() {
                Some(p) => format!("vsock:{p}"),
                None => ctx.sandbox.listen.to_string(),
            };
            println!("listening sandbox={} on {shown}", ctx.sandbox.name);
            tracing::info!(sandbox = %ctx.sandbox.name, listen = %shown, "listening");
            loops.push(tokio::spawn(accept_loop(
                listener,
                ctx,
                graceful.clone(),
                stop_rx.clone(),
            )));
        }
        if let Some(m) = self.metrics {
            loops.push(tokio::spawn(metrics_loop(
                m,
                self.shared.clone(),
                stop_rx.clone(),
            )));
        }
        crate::notify::notify("READY=1");
        shutdown.signal.await;
        crate::notify::notify("STOPPING=1");
        tracing::info!("shutting down: no new connections; draining in-flight requests");
        self.shared
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = stop_tx.send(true);
        for l in loops {
            let _ = l.await;
        }
        let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| GracefulShutdown::new());
        match tokio::time::timeout(shutdown.grace, graceful.shutdown()).await {
            Ok(()) => tracing::info!("drained"),
            Err(_) => {
                tracing::warn!(grace = ?shutdown.grace, "grace period over; closing remaining connections")
            }
        }
        Ok(())
    }
}

/// Writes the record of a request hyper rejected itself, if the error means one.
async fn record_rejection(
    ctx: &SandboxCtx,
    peer: Option<protocol::audit::Peer>,
    e: &hyper::Error,
    seen: Option<&crate::conn::Seen>,
    served: u64,
) {
    let empty = crate::conn::Seen::default();
    let seen = seen.unwrap_or(&empty);
    let Some((status, reason)) = crate::conn::rejection(e, seen, served) else {
        tracing::debug!(error = %e, "connection closed with error");
        return;
    };
    let rec = crate::conn::record(ctx, peer, seen, served, status, reason);
    tracing::info!(sandbox = %rec.sandbox, request_id = %rec.request_id, method = %rec.method, path = %rec.path, status, reason = reason.as_str(), error = %e, "rejected by the HTTP parser");
    if let Some(ack) = ctx.shared.record(&rec, true) {
        let _ = tokio::time::timeout(ACK_WAIT, ack).await;
    }
}

async fn accept_loop(
    listener: Listener,
    ctx: Arc<SandboxCtx>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            a = listener.accept() => a,
        };
        let (io, peer) = match accepted {
            Ok(c) => {
                backoff = Duration::from_millis(5);
                c
            }
            Err(e) => {
                tracing::warn!(sandbox = %ctx.sandbox.name, error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let ctx2 = ctx.clone();
        let served = Served::default();
        let counter = served.clone();
        let svc = service_fn(move |req| {
            counter.add();
            handle(ctx2.clone(), peer, req)
        });
        let (io, back) = Observed::new(io);
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true)
            .half_close(true)
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(io), svc);
        let conn = graceful.watch(conn);
        let span = tracing::debug_span!("conn", sandbox = %ctx.sandbox.name, peer = ?peer);
        let ctx = ctx.clone();
        tokio::spawn(
            async move {
                // Its own statement: the connection (and the stream it wraps) is dropped
                // here, which hands the stream back below.
                let ended = conn.await;
                let stream = back.await.ok();
                if let Err(e) = ended {
                    record_rejection(&ctx, peer, &e, stream.as_ref().map(|s| &s.1), served.get())
                        .await;
                }
                // The client sees the close only now, after the record is written.
                drop(stream);
            }
            .instrument(span),
        );
    }
    listener.cleanup();
}

async fn metrics_loop(
    listener: MetricsListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    match &listener {
        MetricsListener::Tcp(l) => {
            let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
            println!("metrics on {addr}");
            tracing::info!(listen = %addr, "metrics");
        }
        MetricsListener::Unix(Listener::Unix { path, .. }) => {
            println!("metrics on unix:{}", path.display());
            tracing::info!(listen = %path.display(), "metrics");
        }
        MetricsListener::Unix(_) => {}
    }
    loop {
        let io: crate::listen::Conn = tokio::select! {
            _ = stop.changed() => break,
            a = async {
                match &listener {
                    MetricsListener::Tcp(l) => l.accept().await.map(|(s, _)| Box::new(s) as crate::listen::Conn),
                    MetricsListener::Unix(l) => l.accept().await.map(|(s, _)| s),
                }
            } => match a {
                Ok(io) => io,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| crate::metrics::serve(shared.clone(), req));
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(io), svc)
                .await;
        });
    }
    if let MetricsListener::Unix(l) = &listener {
        l.cleanup();
    }
}
