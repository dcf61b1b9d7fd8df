//! Listener, connection, request: the accept loop per sandbox spawns a task per
//! connection, backs off on accept errors and never dies of one. Each request reads its
//! sandbox's current context, so a reload (SIGHUP) applies to the next request while
//! requests in flight finish under the context they started with. Shutdown stops
//! accepting, then lets in-flight requests finish within a grace period.

mod accept;
mod admin;
mod conn;
mod deadline;
mod reload;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use protocol::config::Config;
use protocol::ListenAddr;
use tokio::sync::{mpsc, watch};

use crate::net::listen::{ListenError, Listener};
use crate::observe::audit_log::AuditLog;
use crate::proxy::Upstream;
use crate::proxy::{CtxCell, SandboxCtx, Shared};
use admin::{metrics_loop, MetricsListener};

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
        crate::os::notify::notify("READY=1");
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
        for w in reload::restart_only(&self.config, &new) {
            tracing::warn!("{w}");
        }
        if new.upstream != self.config.upstream {
            self.upstream = Arc::new(Upstream::new(new.upstream.clone()));
        }
        // Keep the audit settings the log was opened with.
        let mut effective = new;
        effective.audit = self.config.audit.clone();
        let new = Arc::new(effective);
        let plan = reload::diff(
            running.iter().map(|(n, r)| (n.as_str(), &r.listen)),
            &new.sandboxes,
        );
        // Stop what goes away (or moves) first: its socket path may be reused.
        for name in &plan.remove {
            let r = running.remove(name).expect("present");
            let _ = r.stop.send(true);
            let _ = r.task.await;
            println!("stopped sandbox={name}");
        }
        let (mut kept, mut added) = (Vec::new(), Vec::new());
        for sb in &new.sandboxes {
            let name = sb.name.to_string();
            if let Some(r) = running.get(&name) {
                let old = r.cell.read().unwrap_or_else(|p| p.into_inner()).clone();
                if old.sandbox.socket_mode != sb.socket_mode
                    || old.sandbox.socket_owner != sb.socket_owner
                {
                    if let Some(p) = sb.listen.unix_path() {
                        if let Err(e) =
                            crate::net::listen::apply_perms(p, sb.socket_mode, sb.socket_owner)
                        {
                            let hint = crate::os::privileges::hint(
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
                    let hint = crate::os::privileges::hint("make the socket's directory writable by that user, or restart the daemon to open the listener with its start-up privileges");
                    tracing::error!(sandbox = %name, error = %e, "cannot open the new listener; it stays closed{hint}");
                }
            }
        }
        self.config = new;
        println!(
            "reloaded configuration: {} sandbox(es) kept, added [{}], removed [{}]",
            kept.len(),
            added.join(", "),
            plan.remove.join(", ")
        );
        tracing::info!(kept = kept.len(), added = ?added, removed = ?plan.remove, "configuration reloaded");
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
