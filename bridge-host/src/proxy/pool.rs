//! The upstream servers of one configuration: which one a request goes to
//! ([`Pool::pick`], over [`super::known::choose`]), and the one retry a request gets when
//! its connection failed before any byte went upstream ([`Pool::send`]). With a single
//! server every request goes to it and nothing here changes how it is served.

use std::future::Future;
use std::sync::{Arc, Mutex};

use http::Response;
use hyper::body::Incoming;
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

    /// Sends with `send` to `first`; when its connection failed (nothing was sent), once
    /// more to another server that has the model. Nothing is retried once a byte has
    /// gone upstream: a timeout or a broken answer ends the request.
    pub async fn send<F, Fut>(
        self: Arc<Self>,
        first: Arc<Upstream>,
        model: Option<ModelName>,
        served_by: Option<ServedBy>,
        send: F,
    ) -> Result<Response<Incoming>, BridgeError>
    where
        F: Fn(Arc<Upstream>) -> Fut,
        Fut: Future<Output = Result<Response<Incoming>, BridgeError>>,
    {
        let e = match send(first.clone()).await {
            Err(e) if e.reason == Reason::UpstreamUnreachable && self.is_multi() => e,
            r => return r,
        };
        self.failed(&first, &e);
        let skip = self.servers.iter().position(|s| Arc::ptr_eq(s, &first));
        let alt = match choose(&self.views(model.as_ref()), skip) {
            Choice::Server { index, has: true } => self.servers[index].clone(),
            _ => return Err(named(&first, e)),
        };
        tracing::info!(from = %first.cfg.name, to = %alt.cfg.name, "retrying on another ollama server: the connection failed before anything was sent");
        if let Some(s) = &served_by {
            *s.lock().unwrap_or_else(|p| p.into_inner()) = alt.cfg.name.clone();
        }
        match send(alt.clone()).await {
            Err(e) if e.reason == Reason::UpstreamUnreachable => {
                self.failed(&alt, &e);
                Err(named(&alt, e))
            }
            r => r,
        }
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
