//! The upstream servers of one configuration: which one a request goes to
//! ([`Pool::pick`], over [`super::known::choose`]), and the one retry a request gets when
//! its connection failed before any byte went upstream ([`Pool::retry_target`]). With a single
//! server every request goes to it and nothing here changes how it is served.

use std::sync::{Arc, Mutex};

use protocol::error::{BridgeError, Reason};
use protocol::ModelName;
use tokio::sync::Notify;

use super::known::{choose, Choice, View};
use super::upstream::Upstream;

/// Every server of the configuration in force, in configuration order.
pub struct Pool {
    pub servers: Vec<Arc<Upstream>>,
    /// Wakes the refresher early (a server failed).
    pub(super) wake: Arc<Notify>,
}

/// The name of the server that served a request, shared with its record (a retry
/// changes it).
pub type ServedBy = Arc<Mutex<String>>;

impl Pool {
    /// The servers for `cfgs`; after a reload each keeps the running one's queue and
    /// facts when its URL is unchanged.
    pub fn new(cfgs: &[protocol::Upstream], prev: Option<&Pool>) -> Pool {
        let servers = cfgs
            .iter()
            .map(|c| {
                let old = prev.and_then(|p| p.servers.iter().find(|s| s.cfg.base == c.base));
                match old.filter(|o| o.cfg == *c) {
                    Some(o) => o.clone(),
                    None => Arc::new(Upstream::new(c.clone(), old.map(|o| &**o))),
                }
            })
            .collect();
        Pool {
            servers,
            wake: Arc::new(Notify::new()),
        }
    }

    /// The first server (the only one with a single `url`).
    pub fn first(&self) -> &Arc<Upstream> {
        &self.servers[0]
    }

    /// Several servers: routing, background refreshes and merged listings apply.
    pub fn is_multi(&self) -> bool {
        self.servers.len() > 1
    }

    fn views(&self, model: Option<&ModelName>) -> Vec<View> {
        self.servers
            .iter()
            .map(|s| {
                let f = s.known.facts();
                let allowed = model.is_none_or(|m| {
                    s.cfg.models.is_empty() || s.cfg.models.iter().any(|p| p.matches(m))
                });
                View {
                    allowed,
                    up: f.is_up(),
                    has: model.is_none_or(|m| f.tags.contains(m)),
                    loaded: model.is_some_and(|m| f.loaded.contains(m)),
                    load: s.load(),
                }
            })
            .collect()
    }

    /// The server for a request naming `model` (or none): never I/O, only what the
    /// refresher and failed connections found. The error names the down server, if any.
    pub fn pick(
        &self,
        model: Option<&ModelName>,
    ) -> Result<Arc<Upstream>, (BridgeError, Option<String>)> {
        if !self.is_multi() {
            return Ok(self.first().clone());
        }
        match choose(&self.views(model), None) {
            Choice::Server { index, .. } => Ok(self.servers[index].clone()),
            Choice::Down(i) => {
                let s = &self.servers[i];
                Err((down(s), Some(s.cfg.name.clone())))
            }
            Choice::NoServer => Err((BridgeError::new(
                Reason::NotFound,
                format!(
                    "model \"{}\" is not routed to any ollama server (the models of each [[upstream.server]])",
                    model.map_or_else(String::new, ToString::to_string)
                ),
            ), None)),
        }
    }

    /// A server failed to connect: it is down until a probe answers, and the refresher
    /// looks at it now.
    pub fn failed(&self, up: &Upstream, e: &BridgeError) {
        if !self.is_multi() {
            return;
        }
        if up.known.mark_down(&e.message) {
            tracing::warn!(server = %up.cfg.name, upstream = %up.cfg.base, error = %e.message, "ollama server is down: its requests go to the others until it answers again");
        }
        self.wake.notify_one();
    }

    /// `first`'s connection failed with `e` (nothing was sent): it is marked down, and
    /// the request may go once more to another healthy server that has its model.
    /// Otherwise the error, naming the server. Nothing is retried once a byte has gone
    /// upstream: a timeout or a broken answer ends the request.
    pub fn retry_target(
        &self,
        first: &Arc<Upstream>,
        model: Option<&ModelName>,
        e: BridgeError,
    ) -> Result<Arc<Upstream>, BridgeError> {
        if e.reason != Reason::UpstreamUnreachable || !self.is_multi() {
            return Err(e);
        }
        self.failed(first, &e);
        let skip = self.servers.iter().position(|s| Arc::ptr_eq(s, first));
        match choose(&self.views(model), skip) {
            Choice::Server { index, has: true } => {
                let alt = self.servers[index].clone();
                tracing::info!(from = %first.cfg.name, to = %alt.cfg.name, "retrying on another ollama server: the connection failed before anything was sent");
                Ok(alt)
            }
            _ => Err(named(first, e)),
        }
    }

    /// The retry's connection failed too: no third try.
    pub fn retry_failed(&self, alt: &Upstream, e: BridgeError) -> BridgeError {
        if e.reason != Reason::UpstreamUnreachable {
            return e;
        }
        self.failed(alt, &e);
        named(alt, e)
    }
}

/// A server's connection failed: the message names it (the operator's view).
fn named(up: &Upstream, e: BridgeError) -> BridgeError {
    let msg = format!("ollama server {} is down ({})", up.cfg.name, e.message);
    BridgeError { message: msg, ..e }
}

/// A request for a model only a down server has.
fn down(up: &Upstream) -> BridgeError {
    let why = up
        .known
        .facts()
        .error
        .unwrap_or_else(|| "not reachable".to_owned());
    BridgeError::new(
        Reason::UpstreamUnreachable,
        format!("ollama server {} is down ({why})", up.cfg.name),
    )
    .with_detail(format!("upstream {}", up.cfg.base))
}
