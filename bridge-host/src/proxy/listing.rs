//! Listings (`/api/tags`, `/api/ps`, `/v1/models`) filtered to the models a sandbox may
//! use: the only answers the bridge reads whole (they are small) before passing them on.

use std::sync::Arc;

use http::Response;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use protocol::config::Sandbox;
use protocol::error::{BridgeError, Reason};
use protocol::policy::model_allowed;
use protocol::route::Route;
use protocol::ModelName;
use serde_json::Value;

use super::ctx::SandboxCtx;
use super::record::Exchange;
use super::relay::{Relay, RespBody, StreamKind};
use super::respond::{copy_head, refuse};

/// Largest listing (tags, ps, models) the bridge reads to filter.
const MAX_LISTING: usize = 16 << 20;

/// Reads a (small) listing and keeps only the models this sandbox may use.
pub async fn filtered(
    ctx: &Arc<SandboxCtx>,
    resp: Response<Incoming>,
    route: Route,
    mut ex: Exchange,
) -> Response<RespBody> {
    let format = Route::error_format_for_path(&ex.rec.path);
    let (mut parts, inner) = resp.into_parts();
    let idle = ctx.upstream.cfg.idle_timeout;
    let collected = tokio::time::timeout(idle, Limited::new(inner, MAX_LISTING).collect()).await;
    let bytes = match collected {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) => {
            let msg = format!("reading Ollama's listing failed: {e}");
            return refuse(ex, BridgeError::new(Reason::UpstreamError, msg), format).await;
        }
        Err(_) => {
            let msg = "Ollama's listing did not arrive in time (idle_timeout)";
            return refuse(ex, BridgeError::new(Reason::UpstreamTimeout, msg), format).await;
        }
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        let err = BridgeError::new(Reason::UpstreamError, "Ollama's listing is not JSON");
        return refuse(ex, err, format).await;
    };
    let (key, fields): (&str, &[&str]) = match route {
        Route::OaiModels => ("data", &["id"]),
        _ => ("models", &["model", "name"]),
    };
    if let Some(Value::Array(items)) = v.get_mut(key) {
        items.retain(|item| listing_item_allowed(&ctx.sandbox, item, fields));
    }
    let out = bytes::Bytes::from(serde_json::to_vec(&v).expect("a JSON value serialises"));
    copy_head(&mut parts, &mut ex);
    let relay = Relay::new(
        http_body_util::Full::new(out),
        StreamKind::Opaque,
        idle,
        ex,
        None,
    );
    Response::from_parts(parts, relay.boxed_unsync())
}

fn listing_item_allowed(sandbox: &Sandbox, item: &Value, fields: &[&str]) -> bool {
    fields
        .iter()
        .find_map(|f| item.get(*f).and_then(Value::as_str))
        .and_then(|n| ModelName::parse(n).ok())
        .is_some_and(|m| model_allowed(sandbox, &m).is_ok())
}
