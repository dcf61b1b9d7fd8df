//! The forward phase's first step: the upstream server a checked request goes to
//! ([`super::pool::Pool::pick`] for its model), named in its record, and the send to it
//! after its turn in the server's fair queue, with the one retry a failed connection gets
//! ([`super::pool::Pool::retry_target`]).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method};
use protocol::error::BridgeError;
use protocol::ModelName;

use protocol::route::Route;

use super::ctx::SandboxCtx;
use super::early::Sending;
use super::queue;
use super::record::Exchange;
use super::upstream::{Chunks, Upstream};
use crate::net::hangup::Hangup;

/// The server for the request whose record is `ex` (its model decided by the gate).
pub fn server(ctx: &SandboxCtx, ex: &mut Exchange) -> Result<Picked, BridgeError> {
    let model = ex
        .rec
        .model
        .as_deref()
        .and_then(|m| ModelName::parse(m).ok());
    let up = match ctx.pool.pick(model.as_ref()) {
        Ok(up) => up,
        Err((e, down)) => {
            // The down server that has the model is the record's `upstream`.
            ex.rec.upstream = down;
            return Err(e);
        }
    };
    let served_by = Arc::new(Mutex::new(up.cfg.name.clone()));
    ex.served_by(served_by.clone());
    Ok(Picked {
        up,
        model,
        served_by,
    })
}

/// A request's server, and what a retry on another one needs.
pub struct Picked {
    pub up: Arc<Upstream>,
    model: Option<ModelName>,
    served_by: super::pool::ServedBy,
}

impl Picked {
    /// Sends the request (its body as pieces) to the picked server after its turn in
    /// that server's fair queue; on a failed connection, once more to another server
    /// that has the model, after a turn in its queue (the same ticket).
    #[allow(clippy::too_many_arguments)]
    pub fn sending(
        &self,
        ctx: &SandboxCtx,
        route: &Route,
        ex: &mut Exchange,
        hangup: Option<Hangup>,
        method: Method,
        path: String,
        headers: HeaderMap,
        content_type: Option<&'static str>,
        body: Vec<Bytes>,
    ) -> Sending {
        let turn = queue::turn(ctx, &self.up, route, ex, hangup);
        if !ctx.pool.is_multi() {
            // One server: its turn and the send, as always (no copy kept for a retry).
            let up = self.up.clone();
            let first = async move {
                up.send(method, &path, &headers, content_type, Chunks::from(body))
                    .await
            };
            return match turn {
                Some(t) => Box::pin(t.then(first)),
                None => Box::pin(first),
            };
        }
        let send = move |up: Arc<Upstream>| {
            let (method, path, headers) = (method.clone(), path.clone(), headers.clone());
            let body = Chunks::from(body.clone());
            async move { up.send(method, &path, &headers, content_type, body).await }
        };
        let pool = ctx.pool.clone();
        let (up, model, served) = (self.up.clone(), self.model.clone(), self.served_by.clone());
        Box::pin(async move {
            let first = match &turn {
                Some(t) => t.clone().then(send(up.clone())).await,
                None => send(up.clone()).await,
            };
            let e = match first {
                Err(e) => e,
                ok => return ok,
            };
            let alt = pool.retry_target(&up, model.as_ref(), e)?;
            *served.lock().unwrap_or_else(|p| p.into_inner()) = alt.cfg.name.clone();
            let again = match turn.and_then(|t| t.at(&alt)) {
                Some(t) => t.then(send(alt.clone())).await,
                None => send(alt.clone()).await,
            };
            again.map_err(|e| pool.retry_failed(&alt, e))
        })
    }
}
