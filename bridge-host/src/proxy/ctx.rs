//! The shared state every listener holds and one sandbox's context (policy, limits,
//! configuration, upstream) that each request runs under.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use protocol::config::{Config, Sandbox};

use super::health::Health;
use super::pool::Pool;
use crate::limits::tokens::Ledger;
use crate::limits::Limiters;
use crate::observe::audit_log::AuditLog;
use crate::observe::metrics::Metrics;
use crate::os::clock::unix_ms;

/// A listener's current context, swapped by reloads.
pub type CtxCell = Arc<RwLock<Arc<SandboxCtx>>>;

/// The context a new request on the listener runs under.
pub fn current(cell: &CtxCell) -> Arc<SandboxCtx> {
    cell.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// What every listener shares.
pub struct Shared {
    pub audit: AuditLog,
    pub metrics: Metrics,
    /// The upstream's health, probed at most once a second for every listener.
    pub health: Health,
    /// Set once shutdown began: requests cut off from now on are `shutting_down`.
    pub draining: AtomicBool,
    /// Every sandbox's token usage against its budgets (kept across reloads).
    pub tokens: Ledger,
    next_id: AtomicU64,
    id_prefix: String,
}

impl Shared {
    pub fn new(audit: AuditLog) -> Shared {
        let boot = unix_ms();
        Shared {
            audit,
            metrics: Metrics::new(),
            health: Health::new(),
            draining: AtomicBool::new(false),
            tokens: Ledger::default(),
            next_id: AtomicU64::new(1),
            id_prefix: format!("{:x}", boot & 0x00ff_ffff_ffff),
        }
    }

    /// The same, with the token usage read from (and saved to) `tokens`.
    pub fn with_tokens(mut self, tokens: Ledger) -> Shared {
        self.tokens = tokens;
        self
    }

    /// How many requests have arrived since start (the audit record ids handed out).
    pub fn requests_seen(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed) - 1
    }

    /// A new audit record id, unique within this daemon's run.
    pub fn request_id(&self) -> String {
        format!(
            "{}-{:06x}",
            self.id_prefix,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// One listener's context under one configuration: its sandbox's policy and limits, the
/// configuration it came from and the upstream client. A reload swaps in a successor;
/// requests already running keep the context they started with.
pub struct SandboxCtx {
    pub sandbox: Sandbox,
    pub limits: Limiters,
    pub shared: Arc<Shared>,
    pub config: Arc<Config>,
    /// The upstream servers (one with a single `url`).
    pub pool: Arc<Pool>,
}

impl SandboxCtx {
    pub fn new(
        sandbox: Sandbox,
        shared: Arc<Shared>,
        config: Arc<Config>,
        pool: Arc<Pool>,
    ) -> SandboxCtx {
        SandboxCtx {
            limits: Limiters::new(&sandbox),
            sandbox,
            shared,
            config,
            pool,
        }
    }

    /// The context after a reload: the same limiters where the limit is unchanged, so
    /// requests in flight across the reload still count against them.
    pub fn successor(&self, sandbox: Sandbox, config: Arc<Config>, pool: Arc<Pool>) -> SandboxCtx {
        let limits = self.limits.successor(&sandbox);
        let mut next = SandboxCtx::new(sandbox, self.shared.clone(), config, pool);
        next.limits = limits;
        next
    }
}
