//! The native pass-through: the checked request goes upstream as re-serialised JSON and
//! the answer comes back through the relay (listings are filtered, HEAD answers carry no
//! body).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response};
use protocol::audit::OUTPUT_LIMIT;
use protocol::body::CheckedBody;
use protocol::route::Route;
use serde_json::Value;

use super::check::Checked;
use super::ctx::SandboxCtx;
use super::early::{self, Sending};
use super::record::Exchange;
use super::relay::{full, Relay, RespBody, StreamKind};
use super::respond::{copy_head, refuse};
use http_body_util::BodyExt;

/// Sends the checked request upstream and relays the answer. A streamed chat or
/// generate request (or a streamed `/v1` one passed through) gets its headers early when
/// Ollama has not answered within `[upstream] early_headers` (see [`super::early`]).
pub async fn forward(ctx: &Arc<SandboxCtx>, c: Checked, mut ex: Exchange) -> Response<RespBody> {
    let format = Route::error_format_for_path(&c.path);
    if ctx.config.audit.log_prompts {
        ex.rec.prompt = c.body.as_ref().map(|b| b.to_value());
    }
    if ctx.pool.is_multi() && c.method == Method::GET && is_listing(&c.route) {
        return super::listing::merged(ctx, c, ex).await;
    }
    let picked = match super::pick::server(ctx, &mut ex) {
        Ok(p) => p,
        Err(e) => return refuse(ex, e, format).await,
    };
    let salvage = super::salvage::for_request(ctx, &c, &ex);
    let up = &picked.up;
    let early = early_kind(&c.route, c.body.as_ref())
        .zip(early::deadline(&ex, up.cfg.early_headers))
        .map(|(kind, at)| (at, kind));
    // The kept fields go out as slices of the received body: no second copy of it.
    let (content_type, body) = match c.body {
        Some(b) => (Some("application/json"), b.chunks()),
        None => (None, vec![c.raw]),
    };
    let mut sending: Sending = {
        let (method, path, hangup) = (c.method.clone(), c.path.clone(), c.hangup.clone());
        picked.sending(
            ctx,
            &c.route,
            &mut ex,
            hangup,
            method,
            path,
            c.headers,
            content_type,
            body,
        )
    };
    let sent = match early::head_by(&mut sending, early).await {
        Ok(sent) => sent,
        Err(kind) => {
            // Ollama is still silent (a model load): the head goes now, the rest later.
            let (budget, permit) = (c.budget, c.permit);
            let hangup = c.hangup;
            let hold = permit.map(|p| Box::new(p) as Box<dyn Send>);
            let idle = up.cfg.idle_timeout;
            let capture = ctx.config.audit.log_prompts;
            return early::answer(kind, ex, move |ex| async move {
                let Some(sent) = early::wait(sending, hangup).await else {
                    return early::gone(ex);
                };
                drop(budget);
                early::then(kind, sent, ex, hold, idle, move |body, ex, hold| {
                    let mut relay = Relay::new(body, kind, idle, ex, hold);
                    if capture {
                        relay = relay.capture_output(OUTPUT_LIMIT);
                    }
                    if let Some(s) = salvage {
                        relay = relay.with_transform(super::salvage::NativeSalvage::boxed(s, kind));
                    }
                    relay.boxed_unsync()
                })
                .await
            });
        }
    };
    // The body has gone upstream (or never will): give back its budget share.
    drop(c.budget);
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return refuse(ex, e, format).await,
    };
    if c.method == Method::HEAD {
        // hyper sends no body (and never polls one): the record is written before the
        // head leaves. A listing's length would be the unfiltered one: it goes too.
        let (mut parts, _body) = resp.into_parts();
        copy_head(&mut parts, &mut ex);
        let status = ex.rec.status;
        ex.finish(status, None, 0).await;
        return Response::from_parts(parts, full(Bytes::new()));
    }
    if resp.status().is_success() && is_listing(&c.route) {
        return super::listing::filtered(ctx, up, resp, c.route, ex).await;
    }
    let (mut parts, inner) = resp.into_parts();
    copy_head(&mut parts, &mut ex);
    let kind = StreamKind::from_headers(&parts.headers);
    let hold = c.permit.map(|p| Box::new(p) as Box<dyn Send>);
    let mut relay = Relay::new(inner, kind, up.cfg.idle_timeout, ex, hold);
    if ctx.config.audit.log_prompts {
        relay = relay.capture_output(OUTPUT_LIMIT);
    }
    if let Some(s) = salvage.filter(|_| parts.status.is_success()) {
        relay = relay.with_transform(super::salvage::NativeSalvage::boxed(s, kind));
    }
    Response::from_parts(parts, relay.boxed_unsync())
}

/// The stream a request's answer will be, when it streams and may get early headers:
/// `/api/chat` and `/api/generate` unless `"stream": false` (Ollama's default is to
/// stream), a passed-through `/v1` chat or completion only with `"stream": true`.
fn early_kind(route: &Route, body: Option<&CheckedBody>) -> Option<StreamKind> {
    let stream = body
        .and_then(|b| b.fields.get("stream"))
        .and_then(Value::as_bool);
    match route {
        Route::Chat | Route::Generate if stream != Some(false) => Some(StreamKind::Ndjson),
        Route::OaiChat | Route::OaiCompletions if stream == Some(true) => Some(StreamKind::Sse),
        _ => None,
    }
}

/// The listings filtered to a sandbox's models (merged across several servers).
fn is_listing(route: &Route) -> bool {
    matches!(route, Route::Tags | Route::Ps | Route::OaiModels)
}
