//! The forward phase's first step: the upstream server a checked request goes to
//! ([`super::pool::Pool::pick`] for its model), named in its record, and the send to it
//! with the one retry a failed connection gets ([`super::pool::Pool::send`]).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method};
use protocol::error::BridgeError;
use protocol::ModelName;

use super::ctx::SandboxCtx;
use super::early::Sending;
use super::record::Exchange;
use super::upstream::{Chunks, Upstream};

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
    /// Sends the request (its body as pieces) to the picked server; on a failed
    /// connection, once more to another server that has the model.
    pub fn send(
        &self,
        ctx: &SandboxCtx,
        method: Method,
        path: String,
        headers: HeaderMap,
        content_type: Option<&'static str>,
        body: Vec<Bytes>,
    ) -> Sending {
        let pool = ctx.pool.clone();
        let (up, model, served) = (self.up.clone(), self.model.clone(), self.served_by.clone());
        Box::pin(async move {
            pool.send(up, model, Some(served), move |up: Arc<Upstream>| {
                let (method, path, headers) = (method.clone(), path.clone(), headers.clone());
                let body = Chunks::from(body.clone());
                async move { up.send(method, &path, &headers, content_type, body).await }
            })
            .await
        })
    }
}
