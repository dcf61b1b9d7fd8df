//! One request, start to end, in phases: read → check → rewrite → forward → relay →
//! record. [`handle`] only dispatches: the status endpoint, the gate ([`check`]), then
//! the native pass-through ([`forward`]) or the OpenAI translation ([`openai`]).
//! Everything the sandbox sends is untrusted; what goes upstream is the re-serialised
//! JSON the policy decided on, never the original bytes.

mod check;
mod ctx;
mod early;
mod forward;
mod health;
mod known;
mod listing;
mod openai;
mod pick;
mod pool;
mod queue;
mod record;
mod refresh;
pub mod relay;
mod reqbody;
mod respond;
mod salvage;
mod status;
mod upstream;

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use protocol::audit::Peer;
use protocol::route::{Route, STATUS_PATH};

pub use ctx::{current, CtxCell, SandboxCtx, Shared};
pub use pool::Pool;
pub use record::Exchange;
pub use refresh::spawn as refresh_servers;
pub use relay::RespBody;
pub use upstream::Upstream;

/// Serves one request on a sandbox's listener.
pub async fn handle(
    ctx: Arc<SandboxCtx>,
    peer: Option<Peer>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let mut ex = Exchange::begin(&ctx, peer, req.method().as_str(), req.uri().path());
    if req.uri().path() == STATUS_PATH {
        return Ok(status::serve(&ctx, req, ex).await);
    }
    let format = Route::error_format_for_path(req.uri().path());
    let resp = match check::check(&ctx, req, &mut ex.rec).await {
        Ok(c) => {
            ex.allow();
            if protocol::budget::metered(&c.route) {
                ex.meter(&c.route);
            }
            let native = matches!(
                c.route,
                Route::OaiChat | Route::OaiCompletions | Route::OaiEmbeddings
            );
            if ctx.sandbox.openai_via_native && native {
                openai::forward(&ctx, c, ex).await
            } else {
                forward::forward(&ctx, c, ex).await
            }
        }
        Err(e) => respond::refuse(ex, e, format).await,
    };
    Ok(resp)
}
