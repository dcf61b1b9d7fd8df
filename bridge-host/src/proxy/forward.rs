//! The native pass-through: the checked request goes upstream as re-serialised JSON and
//! the answer comes back through the relay (listings are filtered, HEAD answers carry no
//! body).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response};
use protocol::audit::OUTPUT_LIMIT;
use protocol::route::Route;

use super::check::Checked;
use super::ctx::SandboxCtx;
use super::record::Exchange;
use super::relay::{full, Relay, RespBody, StreamKind};
use super::respond::{copy_head, refuse};
use http_body_util::BodyExt;

/// Sends the checked request upstream and relays the answer.
pub async fn forward(ctx: &Arc<SandboxCtx>, c: Checked, mut ex: Exchange) -> Response<RespBody> {
    let format = Route::error_format_for_path(&c.path);
    if ctx.config.audit.log_prompts {
        ex.rec.prompt = c.body.as_ref().map(|b| b.to_value());
    }
    let salvage = super::salvage::for_request(ctx, &c, &ex);
    // The kept fields go out as slices of the received body: no second copy of it.
    let (content_type, body) = match c.body {
        Some(b) => (Some("application/json"), b.chunks()),
        None => (None, vec![c.raw]),
    };
    let up = &ctx.upstream;
    let sent = up
        .send(c.method.clone(), &c.path, &c.headers, content_type, body)
        .await;
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
    if resp.status().is_success() && matches!(c.route, Route::Tags | Route::Ps | Route::OaiModels) {
        return super::listing::filtered(ctx, resp, c.route, ex).await;
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
