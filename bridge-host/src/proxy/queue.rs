//! A model request's turn at Ollama: before it is sent, it takes a slot of the upstream's
//! fair queue (`limits::queue`), waiting when `max_parallel` requests are already in
//! Ollama. The wait is part of the send, so a streamed request that waits gets its early
//! headers like one waiting for a model load. The slot is held by the request's
//! [`Ticket`], which the exchange keeps until its record is written: for the whole
//! answer, stream included, and given back on every path (finished, failed, client gone,
//! dropped). A request retried on another server (several servers) takes its turn in
//! that server's queue with the same ticket ([`Turn::at`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::Response;
use hyper::body::Incoming;
use protocol::error::{BridgeError, Reason};
use protocol::limits::retry_after_secs;
use protocol::route::Route;
use tokio::time::Instant;

use super::ctx::SandboxCtx;
use super::ctx::Shared;
use super::record::Exchange;
use super::upstream::Upstream;
use crate::limits::queue::{Entry, FairQueue, Ticket};
use crate::net::hangup::Hangup;

/// A model request's turn at one server's fair queue: the queue, the request's
/// [`Ticket`] (held by its exchange) and its limits. A retry on another server takes
/// its turn there with the same ticket ([`Turn::at`]).
#[derive(Clone)]
pub struct Turn {
    queue: Arc<FairQueue>,
    ticket: Arc<Ticket>,
    arrived: Instant,
    header_timeout: Duration,
    name: String,
    weight: u32,
    own: Option<Duration>,
    shared: Arc<Shared>,
    hangup: Option<Hangup>,
}

/// The request's turn at `up`, for a request that runs a model while the server has a
/// queue; `None` otherwise. Its ticket rides on the exchange from now on.
pub fn turn(
    ctx: &SandboxCtx,
    up: &Upstream,
    route: &Route,
    ex: &mut Exchange,
    hangup: Option<Hangup>,
) -> Option<Turn> {
    let queue = up.queue.clone().filter(|_| route.runs_model())?;
    let ticket = Arc::new(Ticket::new());
    ex.hold_ticket(ticket.clone());
    let header_timeout = up.cfg.header_timeout;
    Some(Turn {
        queue,
        ticket,
        arrived: Instant::from_std(ex.started()),
        header_timeout,
        name: ctx.sandbox.name.to_string(),
        weight: ctx.sandbox.weight,
        own: ctx
            .sandbox
            .limits
            .queue_timeout
            .filter(|q| *q < header_timeout),
        shared: ctx.shared.clone(),
        hangup,
    })
}

impl Turn {
    /// The same request's turn at `up` instead (a retry): the slot it holds here, if
    /// any, is given back when it gets one there; with no queue there, at once.
    pub fn at(&self, up: &Upstream) -> Option<Turn> {
        let Some(queue) = up.queue.clone() else {
            self.ticket.release();
            return None;
        };
        Some(Turn {
            queue,
            header_timeout: up.cfg.header_timeout,
            own: self.own.filter(|q| *q < up.cfg.header_timeout),
            ..self.clone()
        })
    }

    /// Waits for a slot, then `send`s. The wait ends with the request's own limit
    /// (`queue_timeout`, else `header_timeout` from its arrival: as long as it would have
    /// waited inside Ollama), or when the client goes away.
    pub async fn then<F>(self, send: F) -> Result<Response<Incoming>, BridgeError>
    where
        F: Future<Output = Result<Response<Incoming>, BridgeError>>,
    {
        let Turn {
            queue,
            ticket,
            arrived,
            header_timeout,
            name,
            weight,
            own,
            shared,
            hangup,
        } = self;
        let slot = match queue.enter(&name, weight) {
            Entry::Now(slot) => slot,
            Entry::Wait(waiting) => {
                let _counted = shared.metrics.queued_guard(&name);
                let gone = async {
                    match &hangup {
                        Some(h) => h.gone().await,
                        None => std::future::pending().await,
                    }
                };
                let limit = own.unwrap_or(header_timeout);
                tokio::select! {
                    got = tokio::time::timeout_at(arrived + limit, waiting) => match got {
                        Ok(slot) => slot,
                        Err(_) => return Err(too_long(&name, own, header_timeout, queue.view().max_parallel)),
                    },
                    () = gone => return Err(BridgeError::new(Reason::ClientClosed,
                        "the client closed its connection while waiting for a turn at Ollama",
                    )),
                }
            }
        };
        ticket.hold(slot, arrived.elapsed());
        // The wait counts against header_timeout, as it would have inside Ollama.
        match tokio::time::timeout_at(arrived + header_timeout, send).await {
            Ok(r) => r,
            Err(_) => Err(BridgeError::new(
                Reason::UpstreamTimeout,
                format!("Ollama sent no answer within {header_timeout:?} (header_timeout) of the request's arrival, its wait for a turn included"),
            )),
        }
    }
}

/// The end of a wait that lasted the request's limit.
fn too_long(
    sandbox: &str,
    own: Option<Duration>,
    header_timeout: Duration,
    max_parallel: u32,
) -> BridgeError {
    match own {
        Some(q) => {
            let secs = retry_after_secs(q);
            BridgeError::new(
                Reason::RateLimited,
                format!(
                    "sandbox \"{sandbox}\" waited {q:?} (its queue_timeout) for a turn at Ollama, which is busy with {max_parallel} requests (max_parallel); retry in {secs} s"
                ),
            )
            .with_retry_after(secs)
        }
        None => BridgeError::new(
            Reason::UpstreamTimeout,
            format!(
                "no turn at Ollama within {header_timeout:?} (header_timeout): it stayed busy with {max_parallel} requests (max_parallel)"
            ),
        ),
    }
}
