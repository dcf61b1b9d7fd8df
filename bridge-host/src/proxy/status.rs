//! `GET /_bridge/status` on every listener, answered by bridge-host itself (never
//! forwarded): what this sandbox may do and whether Ollama is reachable — enough for
//! `bridge-guest doctor` and `bridge-host status` to say which hop is broken. Nothing
//! secret: no upstream address, no other sandbox, no prompts. Ollama's state comes from
//! the shared health tracker ([`super::health`]), so a status call costs Ollama nothing;
//! status calls have their own small rate limit per sandbox, not `requests_per_minute`.

use std::time::Duration;

use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use protocol::audit::{rfc3339_millis, Endpoint};
use protocol::config::{KeepAlivePolicy, LoadPolicy, NumCtxPolicy};
use protocol::error::{BridgeError, Reason};
use protocol::ollama_opts::KeepAlive;
use protocol::route::{ErrorFormat, STATUS_PATH};
use protocol::ModelName;
use serde_json::{json, Value};

use super::ctx::SandboxCtx;
use super::health::Reading;
use super::record::Exchange;
use super::relay::RespBody;
use super::respond::{answer, refuse};

fn policy_json(p: NumCtxPolicy) -> Value {
    match p {
        NumCtxPolicy::Pin(n) => json!({ "num_ctx": n }),
        NumCtxPolicy::Clamp { min, max, default } => {
            json!({ "num_ctx_min": min, "num_ctx_max": max, "num_ctx_default": default })
        }
    }
}

/// A model's pinned runner options and keep_alive policy, when it has them.
fn load_json(entry: &mut Value, p: &LoadPolicy) {
    if !p.options.is_empty() {
        entry["options_pinned"] = Value::Object(p.options.clone());
    }
    match p.keep_alive {
        Some(KeepAlivePolicy::Pin(k)) => entry["keep_alive"] = json!(k.to_string()),
        Some(KeepAlivePolicy::Max(d)) => {
            entry["keep_alive_max"] = json!(KeepAlive::For(d).to_string());
        }
        None => {}
    }
}

/// A duration in the configuration's own syntax.
fn dur(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Every limit of the sandbox, under its configuration key (sizes in bytes).
fn limits_json(sb: &protocol::Sandbox) -> Value {
    let l = &sb.limits;
    json!({
        "max_concurrent": sb.max_concurrent,
        "weight": sb.weight,
        "queue_timeout": l.queue_timeout.map(dur),
        "requests_per_minute": l.requests_per_minute,
        "max_body": sb.max_body,
        "max_body_buffer": l.max_body_buffer,
        "max_headers": l.max_headers,
        "max_header_bytes": l.max_header_bytes,
        "max_connections": l.max_connections,
        "keepalive_timeout": dur(l.keepalive_timeout),
        "request_header_timeout": dur(l.request_header_timeout),
    })
}

/// The status document of a sandbox.
pub async fn document(ctx: &SandboxCtx) -> Value {
    let sb = &ctx.sandbox;
    let cfg = &ctx.config;
    let (models, upstream) = if ctx.pool.is_multi() {
        servers_view(ctx)
    } else {
        let health = ctx.shared.health.reading(ctx.pool.first()).await;
        let models = health.models.iter().map(|n| (n.clone(), None)).collect();
        (models, upstream_json(&health))
    };
    let mut available = Vec::new();
    for (name, reachable) in &models {
        let Ok(m) = ModelName::parse(name) else {
            continue;
        };
        if protocol::policy::model_allowed(sb, &m).is_err() {
            continue;
        }
        let mut entry = json!({ "model": m.to_string() });
        if let Some(r) = reachable {
            entry["reachable"] = json!(r);
        }
        if let Some(p) = cfg.num_ctx_policy(&m) {
            entry["num_ctx_policy"] = policy_json(p);
        }
        load_json(&mut entry, &cfg.load_policy(&m));
        available.push(entry);
    }
    // Only the policies that can apply to a model this sandbox may use.
    let patterns: Vec<Value> = cfg
        .models
        .iter()
        .filter(|m| sb.models.iter().any(|a| a.overlaps(&m.pattern)))
        .filter_map(|m| {
            let mut v = policy_json(m.num_ctx?);
            v["model"] = json!(m.pattern.as_str());
            Some(v)
        })
        .collect();
    let mut doc = json!({
        "bridge": "ollama-bridge",
        "version": env!("CARGO_PKG_VERSION"),
        "sandbox": sb.name.as_str(),
        "endpoints": sb.endpoints.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        "models": sb.models.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "available_models": available,
        "num_ctx_policies": patterns,
        "openai_via_native": sb.openai_via_native,
        "limits": limits_json(sb),
        "queued": ctx.limits.queued(),
        "queue": queue_json(ctx),
        "connections": ctx.limits.open_connections(),
        // Request-body bytes held right now against max_body_buffer (whole KiB per request).
        "body_buffer_held": ctx.limits.bodies.held(),
        // Not counting this status request itself.
        "in_flight": (ctx.shared.metrics.in_flight(sb.name.as_str()) - 1).max(0),
        "upstream": upstream,
    });
    doc["tokens"] = tokens_json(ctx);
    doc
}

/// This sandbox's token budgets: per window, the budget (null: none), the tokens used
/// in it, what is left, and when a spent budget refills (seconds, and the time).
fn tokens_json(ctx: &SandboxCtx) -> Value {
    let (now, windows) = ctx.shared.tokens.report(&ctx.sandbox);
    let mut out = serde_json::Map::new();
    for w in windows {
        out.insert(
            w.window.as_str().to_owned(),
            json!({
                "budget": w.budget,
                "used": w.used,
                "left": w.left,
                "refills_in_s": w.refills_in,
                "refills_at": w.refills_in.map(|s| rfc3339_millis((now + s) * 1000)),
            }),
        );
    }
    Value::Object(out)
}

/// This sandbox's part of the upstream's fair queue (its own requests only; `null` with
/// `max_parallel = "off"`).
fn queue_json(ctx: &SandboxCtx) -> Value {
    let queues: Vec<_> = ctx
        .pool
        .servers
        .iter()
        .filter_map(|s| s.queue.as_ref())
        .collect();
    let Some(first) = queues.first() else {
        return Value::Null;
    };
    // Its requests at every server, summed: the sandbox never learns of servers.
    let mut own = first.flow_view(ctx.sandbox.name.as_str());
    for q in &queues[1..] {
        let v = q.flow_view(ctx.sandbox.name.as_str());
        own.running += v.running;
        own.waiting += v.waiting;
        own.oldest_wait = own.oldest_wait.max(v.oldest_wait);
    }
    json!({
        "max_parallel": first.view().max_parallel,
        "weight": ctx.sandbox.weight,
        "slots_held": own.running,
        "waiting": own.waiting,
        "oldest_wait_ms": own.oldest_wait.as_millis() as u64,
    })
}

/// Several servers, as the background refresh found them: every model some server has,
/// reachable when a server that has it is up, and Ollama reachable when any server is.
/// No server's name, address or load.
fn servers_view(ctx: &SandboxCtx) -> (Vec<(String, Option<bool>)>, Value) {
    let mut models: Vec<(String, Option<bool>)> = Vec::new();
    let (mut version, mut age) = (None, None::<u64>);
    for s in &ctx.pool.servers {
        let f = s.known.facts();
        let up = f.is_up();
        if up && version.is_none() {
            version = f.version.clone();
        }
        if let Some(at) = f.at {
            let ms = at.elapsed().as_millis() as u64;
            age = Some(age.map_or(ms, |a| a.min(ms)));
        }
        let routed =
            |m: &ModelName| s.cfg.models.is_empty() || s.cfg.models.iter().any(|p| p.matches(m));
        for m in f.tags.iter().filter(|m| routed(m)) {
            let name = m.to_string();
            match models.iter_mut().find(|(n, _)| *n == name) {
                Some((_, r)) => *r = Some(r.unwrap_or(false) || up),
                None => models.push((name, Some(up))),
            }
        }
    }
    let reachable = ctx
        .pool
        .servers
        .iter()
        .any(|s| s.known.facts().up == Some(true));
    let upstream = match reachable {
        true => json!({ "reachable": true, "ollama_version": version, "checked_ms_ago": age }),
        false => {
            json!({ "reachable": false, "error": "no ollama server answers", "checked_ms_ago": age })
        }
    };
    (models, upstream)
}

/// Ollama's state as the last probe found it, and how long ago that was.
fn upstream_json(r: &Reading) -> Value {
    let age = r.at.elapsed().as_millis() as u64;
    match &r.version {
        Ok(v) => {
            json!({ "reachable": true, "ollama_version": v["version"], "checked_ms_ago": age })
        }
        Err(e) => json!({ "reachable": false, "error": e, "checked_ms_ago": age }),
    }
}

/// Answers the status endpoint; its record is written before the answer leaves.
pub async fn serve(
    ctx: &SandboxCtx,
    req: Request<Incoming>,
    mut ex: Exchange,
) -> Response<RespBody> {
    ex.rec.endpoint = Some(Endpoint::Bridge);
    if let Err(d) = protocol::policy::peer_allowed(&ctx.sandbox, ex.rec.peer.as_ref()) {
        return refuse(ex, d.to_error(), ErrorFormat::Ollama).await;
    }
    if let Err(e) = super::check::raw_framing(req.extensions()) {
        return refuse(ex, e, ErrorFormat::Ollama).await;
    }
    // Its own bucket: never a token of requests_per_minute.
    if let Err(e) = ctx.limits.check_status_rate(&ctx.sandbox) {
        return refuse(ex, e, ErrorFormat::Ollama).await;
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let msg = format!("{STATUS_PATH} answers GET and HEAD");
        let e = BridgeError::new(Reason::MethodNotAllowed, msg);
        return refuse(ex, e, ErrorFormat::Ollama).await;
    }
    let body = serde_json::to_vec(&document(ctx).await).expect("a JSON value serialises");
    let no_store = [(header::CACHE_CONTROL, "no-store")];
    answer(ex, StatusCode::OK, "application/json", &no_store, body).await
}
