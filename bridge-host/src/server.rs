//! Listener, connection, request: the accept loop per sandbox spawns a task per
//! connection, backs off on accept errors and never dies of one. Each request reads its
//! sandbox's current context, so a reload (SIGHUP) applies to the next request while
//! requests in flight finish under the context they started with. Shutdown stops
//! accepting, then lets in-flight requests finish within a grace period.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use protocol::config::Config;
use protocol::ListenAddr;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::audit::{AuditLog, ACK_WAIT};
use crate::conn::{Observed, Served};
use crate::listen::{ListenError, Listener};
use crate::metrics::{metrics_loop, MetricsListener};
use crate::service::{handle, SandboxCtx, Shared};
use crate::upstream::Upstream;

/// Time a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A listener's current context, swapped by reloads.
pub type CtxCell = Arc<RwLock<Arc<SandboxCtx>>>;

/// A bound daemon, not yet serving.
pub struct Server {
    listeners: Vec<(Listener, Arc<SandboxCtx>)>,
    shared: Arc<Shared>,
    config: Arc<Config>,
    upstream: Arc<Upstream>,
    metrics: Option<MetricsListener>,
}

/// How `run` ends, and how it learns of new configurations.
pub struct Shutdown {
    /// Resolves when the daemon should stop accepting and drain.
    pub signal: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    /// Longest wait for in-flight requests after the signal.
    pub grace: Duration,
    /// Validated configurations to switch to (SIGHUP), if reloading is possible.
    pub reloads: Option<mpsc::UnboundedReceiver<Config>>,
}

/// A sandbox being served.
struct Running {
    listen: ListenAddr,
    cell: CtxCell,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Opens the audit log and every listener; nothing is served yet.
    pub fn bind(config: Config) -> anyhow::Result<Server> {
        let audit = AuditLog::open(&config.audit.path)?;
        let config = Arc::new(config);
        let shared = Arc::new(Shared::new(audit));
        let upstream = Arc::new(Upstream::new(config.upstream.clone()));
        let mut listeners = Vec::new();
        for sb in &config.sandboxes {
            let l = Listener::bind(&sb.listen, sb.socket_mode, sb.socket_owner)
                .map_err(|e: ListenError| anyhow::anyhow!("sandbox \"{}\": {e}", sb.name))?;
            let ctx = SandboxCtx::new(sb.clone(), shared.clone(), config.clone(), upstream.clone());
            listeners.push((l, Arc::new(ctx)));
        }
        let metrics = config
            .metrics
            .as_ref()
            .map(MetricsListener::bind)
            .transpose()?;
        Ok(Server {
            listeners,
            shared,
            config,
            upstream,
            metrics,
        })
    }

    /// The audit log handle (for SIGHUP reopen).
    pub fn audit(&self) -> AuditLog {
        self.shared.audit.clone()
    }

    /// Serves until the shutdown signal, switching configurations as they come, then drains.
    pub async fn run(mut self, mut shutdown: Shutdown) -> anyhow::Result<()> {
        let graceful = Arc::new(GracefulShutdown::new());
        let mut running: HashMap<String, Running> = HashMap::new();
        for (listener, ctx) in std::mem::take(&mut self.listeners) {
            let name = ctx.sandbox.name.to_string();
            running.insert(name, start(listener, ctx, graceful.clone()));
        }
        let (stop_metrics, stop_rx) = watch::channel(false);
        let metrics_task = self
            .metrics
            .take()
            .map(|m| tokio::spawn(metrics_loop(m, self.shared.clone(), stop_rx)));
        crate::notify::notify("READY=1");
        loop {
            let next = async {
                match shutdown.reloads.as_mut() {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown.signal => break,
                Some(cfg) = next => self.reload(cfg, &mut running, &graceful).await,
            }
        }
        crate::notify::notify("STOPPING=1");
        tracing::info!("shutting down: no new connections; draining in-flight requests");
        self.shared
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = stop_metrics.send(true);
        for (_, r) in running.drain() {
            let _ = r.stop.send(true);
            let _ = r.task.await;
        }
        if let Some(t) = metrics_task {
            let _ = t.await;
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

    /// Switches to a validated configuration: policies swap atomically per sandbox,
    /// removed listeners stop accepting, added ones open. Requests in flight keep the
    /// context they started with.
    async fn reload(
        &mut self,
        new: Config,
        running: &mut HashMap<String, Running>,
        graceful: &Arc<GracefulShutdown>,
    ) {
        let new = Arc::new(new);
        if new.audit != self.config.audit {
            tracing::warn!("[audit] changed: the audit file and log_prompts keep their old values until a restart");
        }
        if new.metrics != self.config.metrics {
            tracing::warn!(
                "[metrics] changed: the metrics listener keeps its old address until a restart"
            );
        }
        if new.privileges != self.config.privileges {
            tracing::warn!(
                "[privileges] changed: whom the daemon runs as changes at the next start"
            );
        }
        if new.upstream != self.config.upstream {
            self.upstream = Arc::new(Upstream::new(new.upstream.clone()));
        }
        // Keep the audit settings the log was opened with.
        let mut effective = (*new).clone();
        effective.audit = self.config.audit.clone();
        let new = Arc::new(effective);
        let (mut kept, mut added, mut removed) = (Vec::new(), Vec::new(), Vec::new());
        // Stop what goes away (or moves) first: its socket path may be reused.
        let wanted: HashMap<&str, &protocol::Sandbox> =
            new.sandboxes.iter().map(|s| (s.name.as_str(), s)).collect();
        let names: Vec<String> = running.keys().cloned().collect();
        for name in names {
            let moved = wanted
                .get(name.as_str())
                .is_none_or(|sb| sb.listen != running[&name].listen);
            if moved {
                let r = running.remove(&name).expect("present");
                let _ = r.stop.send(true);
                let _ = r.task.await;
                println!("stopped sandbox={name}");
                removed.push(name);
            }
        }
        for sb in &new.sandboxes {
            let name = sb.name.to_string();
            if let Some(r) = running.get(&name) {
                let old = r.cell.read().unwrap_or_else(|p| p.into_inner()).clone();
                if old.sandbox.socket_mode != sb.socket_mode
                    || old.sandbox.socket_owner != sb.socket_owner
                {
                    if let Some(p) = sb.listen.unix_path() {
                        if let Err(e) =
                            crate::listen::apply_perms(p, sb.socket_mode, sb.socket_owner)
                        {
                            let hint = crate::privileges::hint(
                                "changing a socket's owner needs root: restart the daemon to apply it",
                            );
                            tracing::error!(sandbox = %name, error = %e, "cannot apply the new socket mode/owner{hint}");
                        }
                    }
                }
                let next = Arc::new(old.successor(sb.clone(), new.clone(), self.upstream.clone()));
                *r.cell.write().unwrap_or_else(|p| p.into_inner()) = next;
                kept.push(name);
                continue;
            }
            match Listener::bind(&sb.listen, sb.socket_mode, sb.socket_owner) {
                Ok(l) => {
                    let ctx = SandboxCtx::new(
                        sb.clone(),
                        self.shared.clone(),
                        new.clone(),
                        self.upstream.clone(),
                    );
                    running.insert(name.clone(), start(l, Arc::new(ctx), graceful.clone()));
                    added.push(name);
                }
                Err(e) => {
                    let hint = crate::privileges::hint("make the socket's directory writable by that user, or restart the daemon to open the listener with its start-up privileges");
                    tracing::error!(sandbox = %name, error = %e, "cannot open the new listener; it stays closed{hint}");
                }
            }
        }
        self.config = new;
        println!(
            "reloaded configuration: {} sandbox(es) kept, added [{}], removed [{}]",
            kept.len(),
            added.join(", "),
            removed.join(", ")
        );
        tracing::info!(kept = kept.len(), added = ?added, removed = ?removed, "configuration reloaded");
    }
}

/// Announces and starts serving one listener.
fn start(listener: Listener, ctx: Arc<SandboxCtx>, graceful: Arc<GracefulShutdown>) -> Running {
    // Show the port actually bound (VMADDR_PORT_ANY picks one).
    let shown = match listener.vsock_port() {
        Some(p) => format!("vsock:{p}"),
        None => ctx.sandbox.listen.to_string(),
    };
    println!("listening sandbox={} on {shown}", ctx.sandbox.name);
    tracing::info!(sandbox = %ctx.sandbox.name, listen = %shown, "listening");
    let listen = ctx.sandbox.listen.clone();
    let cell: CtxCell = Arc::new(RwLock::new(ctx));
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, cell.clone(), graceful, stop_rx));
    Running {
        listen,
        cell,
        stop,
        task,
    }
}

fn current(cell: &CtxCell) -> Arc<SandboxCtx> {
    cell.read().unwrap_or_else(|p| p.into_inner()).clone()
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
    cell: CtxCell,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            a = listener.accept() => a,
        };
        let ctx = current(&cell);
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
        let cell2 = cell.clone();
        let served = Served::default();
        let counter = served.clone();
        let svc = service_fn(move |req| {
            counter.add();
            // Each request is decided under the context current when it arrives.
            handle(current(&cell2), peer, req)
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
        let cell3 = cell.clone();
        tokio::spawn(
            async move {
                // Its own statement: the connection (and the stream it wraps) is dropped
                // here, which hands the stream back below.
                let ended = conn.await;
                let stream = back.await.ok();
                if let Err(e) = ended {
                    record_rejection(
                        &current(&cell3),
                        peer,
                        &e,
                        stream.as_ref().map(|s| &s.1),
                        served.get(),
                    )
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
