//! Listings (`/api/tags`, `/api/ps`, `/v1/models`) filtered to the models a sandbox may
//! use: the only answers the bridge reads whole (they are small) before passing them on.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use protocol::audit::AuditRecord;
use protocol::config::Sandbox;
use protocol::error::{BridgeError, Reason};
use protocol::policy::model_allowed;
use protocol::route::Route;
use protocol::ModelName;
use serde_json::Value;

use crate::proxy::relay::{Relay, RespBody, StreamKind};
use crate::proxy::record::finisher;
use crate::proxy::{refuse, set_request_id, strip_hop_by_hop, SandboxCtx};

/// Largest listing (tags, ps, models) the bridge reads to filter.
const MAX_LISTING: usize = 16 << 20;

/// Reads a (small) listing and keeps only the models this sandbox may use.
pub(crate) async fn filtered(
    ctx: &Arc<SandboxCtx>,
    resp: Response<Incoming>,
    route: Route,
    mut rec: AuditRecord,
    start: Instant,
) -> Response<RespBody> {
    let format = Route::error_format_for_path(&rec.path);
    let (mut parts, inner) = resp.into_parts();
    let collected = tokio::time::timeout(
        ctx.upstream.cfg.idle_timeout,
        Limited::new(inner, MAX_LISTING).collect(),
    )
    .await;
    let bytes = match collected {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) => {
            let err = BridgeError::new(
                502,
                Reason::UpstreamError,
                format!("reading Ollama's listing failed: {e}"),
            );
            return refuse(ctx, err, format, rec, start).await;
        }
        Err(_) => {
            let err = BridgeError::new(
                504,
                Reason::UpstreamTimeout,
                "Ollama's listing did not arrive in time (idle_timeout)",
            );
            return refuse(ctx, err, format, rec, start).await;
        }
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        let err = BridgeError::new(502, Reason::UpstreamError, "Ollama's listing is not JSON");
        return refuse(ctx, err, format, rec, start).await;
    };
    let (key, fields): (&str, &[&str]) = match route {
        Route::OaiModels => ("data", &["id"]),
        _ => ("models", &["model", "name"]),
    };
    if let Some(Value::Array(items)) = v.get_mut(key) {
        items.retain(|item| listing_item_allowed(&ctx.sandbox, item, fields));
    }
    let out = Bytes::from(serde_json::to_vec(&v).expect("a JSON value serialises"));
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::CONTENT_LENGTH);
    set_request_id(&mut parts.headers, &rec.request_id);
    rec.status = parts.status.as_u16();
    let relay = Relay::new(
        Full::new(out),
        StreamKind::Opaque,
        ctx.upstream.cfg.idle_timeout,
        String::new(),
        finisher(ctx, rec, start),
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
