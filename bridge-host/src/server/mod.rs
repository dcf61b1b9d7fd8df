//! Listener, connection, request: the accept loop per sandbox spawns a task per
//! connection, backs off on accept errors and never dies of one. Each request reads its
//! sandbox's current context, so a reload (SIGHUP) applies to the next request while
//! requests in flight finish under the context they started with. A reload gets its
//! configuration and new listeners from a [`Source`]: the daemon itself, or (started as
//! root) its privileged monitor. Shutdown stops accepting, then lets in-flight requests
//! finish within a grace period.

mod accept;
mod admin;
mod budgets;
mod conn;
mod deadline;
mod handoff;
pub mod monitor;
mod preload;
mod reload;
mod source;
mod trim;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use protocol::config::Config;
use protocol::ListenAddr;
use tokio::sync::{mpsc, watch};

pub use source::Source;

use crate::limits::tokens::{state_path, Ledger};
use crate::net::listen::{ListenError, Listener};
use crate::observe::audit_log::AuditLog;
use crate::proxy::{refresh_servers, Pool};
use crate::proxy::{CtxCell, SandboxCtx, Shared};
use admin::{metrics_loop, MetricsListener};

/// A bound daemon, not yet serving.
pub struct Server {
    listeners: Vec<(Listener, Arc<SandboxCtx>)>,
    shared: Arc<Shared>,
    config: Arc<Config>,
    pool: Arc<Pool>,
    metrics: Option<MetricsListener>,
    /// Tells the preloader of each new configuration (set once serving).
    preload: Option<watch::Sender<preload::Target>>,
}

/// How `run` ends, and how it learns of new configurations.
pub struct Shutdown {
    /// Resolves when the daemon should stop accepting and drain.
    pub signal: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    /// Longest wait for in-flight requests after the signal.
    pub grace: Duration,
    /// Reload requests (SIGHUP), if reloading is possible.
    pub reloads: Option<Reloads>,
}

/// How `run` reloads.
pub struct Reloads {
    /// One message per reload asked for.
    pub requests: mpsc::UnboundedReceiver<()>,
    /// Where the configuration and new listeners come from.
    pub source: Source,
}

/// What interrupts serving, besides the shutdown signal.
enum Event {
    Reload,
    /// Reloading became impossible: the privileged monitor is gone.
    SourceGone(monitor::MonitorError),
}

/// The next reload request, or the end of the source (never, without reloads).
async fn next_event(reloads: &mut Option<Reloads>) -> Event {
    let Some(r) = reloads else {
        return std::future::pending().await;
    };
    tokio::select! {
        Some(()) = r.requests.recv() => Event::Reload,
        e = r.source.gone() => Event::SourceGone(e),
    }
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
        let tokens = if config.audit.to_stdout() {
            let budgets = config.sandboxes.iter().any(|s| s.tokens.is_set());
            if budgets {
                tracing::warn!("token budgets are kept in memory only: the audit log is standard output ([audit] path = \"-\"), so there is no directory for their state file; a restart starts them empty");
            }
            Ledger::default()
        } else {
            Ledger::open(state_path(&config.audit.path))
        };
        tokens.configure(&config.sandboxes);
        let shared = Arc::new(Shared::new(audit).with_tokens(tokens));
        let pool = Arc::new(Pool::new(&config.servers, None));
        let mut listeners = Vec::new();
        for sb in &config.sandboxes {
            let l = Listener::bind(&sb.listen, sb.socket_mode, sb.socket_owner)
                .map_err(|e: ListenError| anyhow::anyhow!("sandbox \"{}\": {e}", sb.name))?;
            let ctx = SandboxCtx::new(sb.clone(), shared.clone(), config.clone(), pool.clone());
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
            pool,
            metrics,
            preload: None,
        })
    }

    /// The audit log handle (for SIGHUP reopen).
    pub fn audit(&self) -> AuditLog {
        self.shared.audit.clone()
    }

    /// Serves until the shutdown signal, switching configurations as they come, then drains.
    pub async fn run(mut self, mut shutdown: Shutdown) -> anyhow::Result<()> {
        let mut reloads = shutdown.reloads.take();
        if let Some(r) = &reloads {
            r.source.announce();
        }
        let graceful = Arc::new(GracefulShutdown::new());
        let mut running: HashMap<String, Running> = HashMap::new();
        for (listener, ctx) in std::mem::take(&mut self.listeners) {
            let name = ctx.sandbox.name.to_string();
            running.insert(name, start(listener, ctx, graceful.clone()));
        }
        let (stop_metrics, stop_rx) = watch::channel(false);
        let budgets = tokio::spawn(budgets::keep(self.shared.clone(), stop_rx.clone()));
        let trimmer = tokio::spawn(trim::keep(self.shared.clone(), stop_rx.clone()));
        let stop_preloads = stop_rx.clone();
        let metrics_task = self
            .metrics
            .take()
            .map(|m| tokio::spawn(metrics_loop(m, self.shared.clone(), stop_rx)));
        crate::os::notify::notify("READY=1");
        // One server: one probe of Ollama now, in its own task: a warning if it is down
        // (it may come later). Several: their models and health, refreshed in the
        // background (a down one is logged by name).
        if self.pool.is_multi() {
            refresh_servers(&self.pool, self.shared.clone());
        } else {
            self.shared.health.probe_at_start(self.pool.first());
        }
        // Preloads start from that probe's reading.
        let (preload_tx, preload_rx) = watch::channel((self.config.clone(), self.pool.clone()));
        let preloads = tokio::spawn(preload::keep_warm(
            self.shared.clone(),
            preload_rx,
            stop_preloads,
        ));
        self.preload = Some(preload_tx);
        let mut failure = None;
        loop {
            tokio::select! {
                _ = &mut shutdown.signal => break,
                ev = next_event(&mut reloads) => match (ev, reloads.as_mut()) {
                    (Event::Reload, Some(r)) => self.reload(&mut r.source, &mut running, &graceful).await,
                    (Event::SourceGone(e), _) => {
                        tracing::error!(error = %e, "reloads are no longer possible: shutting down (restart the daemon)");
                        failure = Some(e);
                        break;
                    }
                    (Event::Reload, None) => {}
                },
            }
        }
        drop(reloads);
        crate::os::notify::notify("STOPPING=1");
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
        let _ = budgets.await;
        let _ = trimmer.await;
        // A load in progress may wait for Ollama for long: it is not waited for.
        preloads.abort();
        let graceful = drain_tracker(graceful).await;
        match tokio::time::timeout(shutdown.grace, graceful.shutdown()).await {
            Ok(()) => tracing::info!("drained"),
            Err(_) => {
                tracing::warn!(grace = ?shutdown.grace, "grace period over; closing remaining connections")
            }
        }
        // Every request that ended has been charged: the budgets' last state.
        budgets::last(&self.shared);
        match failure {
            Some(e) => Err(anyhow::anyhow!("{e}: stopped serving")),
            None => Ok(()),
        }
    }

    /// Reloads from `source`: the new configuration is read and validated first (if it
    /// cannot be had, nothing changes); then policies swap atomically per sandbox,
    /// removed listeners stop accepting, added ones open. Requests in flight keep the
    /// context they started with. One line on stdout says how it went: `reloaded
    /// configuration: ...` only when every part happened.
    async fn reload(
        &mut self,
        source: &mut Source,
        running: &mut HashMap<String, Running>,
        graceful: &Arc<GracefulShutdown>,
    ) {
        let new = match source.config().await {
            Ok(c) => c,
            Err(f) => {
                // Logged first: whoever reads stdout finds the log written.
                let line = reload::refused(&f);
                tracing::error!("{line}");
                println!("{line}");
                return;
            }
        };
        for w in reload::restart_only(&self.config, &new) {
            tracing::warn!("{w}");
        }
        if new.servers != self.config.servers {
            self.pool = Arc::new(Pool::new(&new.servers, Some(&self.pool)));
            refresh_servers(&self.pool, self.shared.clone());
        }
        // Keep the audit settings the log was opened with.
        let mut effective = new;
        effective.audit = self.config.audit.clone();
        let new = Arc::new(effective);
        let plan = reload::diff(
            running.iter().map(|(n, r)| (n.as_str(), &r.listen)),
            &new.sandboxes,
        );
        let mut report = reload::Report::default();
        // Stop what goes away (or moves) first: its socket path may be reused.
        for name in &plan.remove {
            let r = running.remove(name).expect("present");
            let _ = r.stop.send(true);
            let _ = r.task.await;
            source.release(&r.listen).await;
            println!("stopped sandbox={name}");
        }
        for sb in &new.sandboxes {
            let name = sb.name.to_string();
            if let Some(r) = running.get(&name) {
                let old = r.cell.read().unwrap_or_else(|p| p.into_inner()).clone();
                if old.sandbox.socket_mode != sb.socket_mode
                    || old.sandbox.socket_owner != sb.socket_owner
                {
                    if let Err(f) = source.perms(sb).await {
                        report.failed.push(f);
                    }
                }
                let next = Arc::new(old.successor(sb.clone(), new.clone(), self.pool.clone()));
                *r.cell.write().unwrap_or_else(|p| p.into_inner()) = next;
                report.kept += 1;
                continue;
            }
            match source.listener(sb).await {
                Ok(l) => {
                    let ctx = SandboxCtx::new(
                        sb.clone(),
                        self.shared.clone(),
                        new.clone(),
                        self.pool.clone(),
                    );
                    running.insert(name.clone(), start(l, Arc::new(ctx), graceful.clone()));
                    report.added.push(name);
                }
                Err(f) => report.failed.push(f),
            }
        }
        self.shared.tokens.configure(&new.sandboxes);
        self.config = new;
        if let Some(tx) = &self.preload {
            tx.send_replace((self.config.clone(), self.pool.clone()));
        }
        report.removed = plan.remove;
        let line = report.line();
        if report.failed.is_empty() {
            tracing::info!(kept = report.kept, added = ?report.added, removed = ?report.removed, "configuration reloaded");
        } else {
            tracing::error!("{line}");
        }
        println!("{line}");
    }
}

/// Announces and starts serving one listener.
/// The drain tracker, once the accept loops (awaited before) and the connections still
/// being told apart from a hand-off (`accept.rs`: a weak handle, upgraded only for the
/// instant a connection is registered) hold no other handle on it. Taking a fresh one
/// instead would drain nothing: in-flight requests would be cut at exit.
async fn drain_tracker(mut g: Arc<GracefulShutdown>) -> GracefulShutdown {
    loop {
        match Arc::try_unwrap(g) {
            Ok(t) => return t,
            Err(shared) => {
                g = shared;
                tokio::task::yield_now().await;
            }
        }
    }
}

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
    let task = tokio::spawn(accept::accept_loop(
        listener,
        cell.clone(),
        graceful,
        stop_rx,
    ));
    Running {
        listen,
        cell,
        stop,
        task,
    }
}
