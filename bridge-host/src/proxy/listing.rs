//! Listings (`/api/tags`, `/api/ps`, `/v1/models`) filtered to the models a sandbox may
//! use: the only answers the bridge reads whole (they are small) before passing them on.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use protocol::config::Sandbox;
use protocol::error::{BridgeError, Reason};
use protocol::policy::model_allowed;
use protocol::route::Route;
use protocol::ModelName;
use serde_json::Value;

use super::check::Checked;
use super::ctx::SandboxCtx;
use super::record::Exchange;
use super::relay::{Relay, RespBody, StreamKind};
use super::respond::{answer, copy_head, refuse};
use super::upstream::Upstream;

/// Largest listing (tags, ps, models) the bridge reads to filter.
const MAX_LISTING: usize = 16 << 20;

/// Reads a (small) listing and keeps only the models this sandbox may use.
pub async fn filtered(
    ctx: &Arc<SandboxCtx>,
    up: &Upstream,
    resp: Response<Incoming>,
    route: Route,
    mut ex: Exchange,
) -> Response<RespBody> {
    let format = Route::error_format_for_path(&ex.rec.path);
    let (mut parts, inner) = resp.into_parts();
    let idle = up.cfg.idle_timeout;
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

/// Several servers: the listing of every server not known to be down, asked at once and
/// merged (one entry per model name, the first server's in configuration order), then
/// filtered like a single server's. Its record's `upstream` names the servers asked.
pub async fn merged(ctx: &Arc<SandboxCtx>, c: Checked, mut ex: Exchange) -> Response<RespBody> {
    let format = Route::error_format_for_path(&ex.rec.path);
    let servers: Vec<Arc<Upstream>> = ctx
        .pool
        .servers
        .iter()
        .filter(|s| s.known.facts().is_up())
        .cloned()
        .collect();
    let names: Vec<&str> = servers.iter().map(|s| s.cfg.name.as_str()).collect();
    ex.served_by(Arc::new(Mutex::new(names.join(","))));
    let asks: Vec<_> = servers
        .iter()
        .map(|s| {
            let (s, path, headers) = (s.clone(), c.path.clone(), c.headers.clone());
            tokio::spawn(async move { read(&s, &path, &headers).await.map_err(|e| (s, e)) })
        })
        .collect();
    let (key, fields): (&str, &[&str]) = match c.route {
        Route::OaiModels => ("data", &["id"]),
        _ => ("models", &["model", "name"]),
    };
    let mut out: Option<Value> = None;
    let mut seen = HashSet::new();
    let mut errors = Vec::new();
    for ask in asks {
        let mut v = match ask.await {
            Ok(Ok(v)) => v,
            Ok(Err((s, e))) => {
                if e.reason == Reason::UpstreamUnreachable {
                    ctx.pool.failed(&s, &e);
                }
                errors.push(format!(
                    "ollama server {} is down ({})",
                    s.cfg.name, e.message
                ));
                continue;
            }
            Err(_) => continue,
        };
        let items = match v.get_mut(key) {
            Some(Value::Array(items)) => std::mem::take(items),
            _ => Vec::new(),
        };
        let all = out.get_or_insert_with(|| {
            v[key] = Value::Array(Vec::new());
            v
        });
        for item in items {
            let name = fields
                .iter()
                .find_map(|f| item.get(*f).and_then(Value::as_str));
            let name = name.and_then(|n| ModelName::parse(n).ok());
            if name.is_some_and(|n| seen.insert(n))
                && listing_item_allowed(&ctx.sandbox, &item, fields)
            {
                if let Some(Value::Array(a)) = all.get_mut(key) {
                    a.push(item);
                }
            }
        }
    }
    let Some(v) = out else {
        let msg = match errors.is_empty() {
            true => "every ollama server is down".to_owned(),
            false => errors.join("; "),
        };
        let err = BridgeError::new(Reason::UpstreamUnreachable, msg);
        return refuse(ex, err, format).await;
    };
    let body = serde_json::to_vec(&v).expect("a JSON value serialises");
    answer(
        ex,
        StatusCode::OK,
        "application/json; charset=utf-8",
        &[],
        body,
    )
    .await
}

/// One server's listing, whole (it is small).
async fn read(up: &Upstream, path: &str, headers: &HeaderMap) -> Result<Value, BridgeError> {
    let resp = up
        .send(Method::GET, path, headers, None, bytes::Bytes::new())
        .await?;
    let status = resp.status();
    let idle = up.cfg.idle_timeout;
    let collected =
        tokio::time::timeout(idle, Limited::new(resp.into_body(), MAX_LISTING).collect())
            .await
            .map_err(|_| {
                BridgeError::new(
                    Reason::UpstreamTimeout,
                    "its listing did not arrive in time (idle_timeout)",
                )
            })?
            .map_err(|e| {
                BridgeError::new(
                    Reason::UpstreamError,
                    format!("reading its listing failed: {e}"),
                )
            })?;
    if !status.is_success() {
        return Err(BridgeError::new(
            Reason::UpstreamError,
            format!("its listing answered HTTP {status}"),
        ));
    }
    serde_json::from_slice(&collected.to_bytes())
        .map_err(|_| BridgeError::new(Reason::UpstreamError, "its listing is not JSON"))
}

fn listing_item_allowed(sandbox: &Sandbox, item: &Value, fields: &[&str]) -> bool {
    fields
        .iter()
        .find_map(|f| item.get(*f).and_then(Value::as_str))
        .and_then(|n| ModelName::parse(n).ok())
        .is_some_and(|m| model_allowed(sandbox, &m).is_ok())
}
