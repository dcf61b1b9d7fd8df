//! Models kept warm (`[model."NAME"] preload = true`): a background task asks Ollama to
//! load each such model with an `/api/generate` that has no prompt and carries exactly
//! what a request for the model carries after the policy (`protocol::policy::load_request`:
//! num_ctx, pinned options, keep_alive), so the first real request does not reload it.
//! It does so at start, after a reload that adds a model or changes what its load
//! carries, and whenever the shared health tracker finds Ollama reachable again after it
//! was not (it asks the tracker every [`WATCH_EVERY`] while there is something to keep
//! warm, and wakes on every probe anyone else causes). Never on a request's path; a
//! failure is a warning and a metric, retried after Ollama comes back or a reload.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::BodyExt;
use protocol::config::Config;
use protocol::ModelName;
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::proxy::{Pool, Shared, Upstream};

/// How often Ollama's health is asked for while some model is to be kept warm.
pub const WATCH_EVERY: Duration = Duration::from_secs(5);
/// The header marking a preload request (for Ollama's logs and the test double).
pub const PRELOAD_HEADER: &str = "x-ollama-bridge-preload";

/// The configuration and upstream servers in force (replaced by each reload).
pub type Target = (Arc<Config>, Arc<Pool>);

/// Keeps the preloaded models warm until `stop`.
pub async fn keep_warm(
    shared: Arc<Shared>,
    mut target: watch::Receiver<Target>,
    mut stop: watch::Receiver<bool>,
) {
    let mut probes = shared.health.subscribe();
    // The load bodies asked of this upstream since Ollama last came back, by model.
    let mut asked: HashMap<String, Map<String, Value>> = HashMap::new();
    let mut asked_of: Option<Arc<Upstream>> = None;
    let mut comebacks = shared.health.comebacks();
    loop {
        let (config, pool) = target.borrow_and_update().clone();
        if pool.is_multi() {
            let wanted = wanted(&config);
            warm_servers(&shared, &pool, &wanted, &mut asked).await;
            tokio::select! {
                _ = tokio::time::sleep(WATCH_EVERY), if !wanted.is_empty() => {}
                r = target.changed() => if r.is_err() { break },
                _ = stop.wait_for(|s| *s) => break,
            }
            continue;
        }
        let up = pool.first().clone();
        if !asked_of.as_ref().is_some_and(|a| Arc::ptr_eq(a, &up)) {
            asked.clear();
            asked_of = Some(up.clone());
        }
        let wanted = wanted(&config);
        let watching = !wanted.is_empty();
        if watching {
            let reading = shared.health.reading(&up).await;
            let now = shared.health.comebacks();
            if now != comebacks {
                comebacks = now;
                asked.clear();
                tracing::info!(
                    models = wanted.len(),
                    "Ollama is back: loading the preloaded models again"
                );
            }
            if reading.version.is_ok() {
                for (model, body) in wanted {
                    let name = model.to_string();
                    if asked.get(&name) == Some(&body) {
                        continue;
                    }
                    load(&shared, &up, &name, &body).await;
                    asked.insert(name, body);
                }
            }
        } else {
            // Nothing to keep warm: a model added later is loaded then, not "again".
            asked.clear();
            comebacks = shared.health.comebacks();
        }
        probes.borrow_and_update();
        tokio::select! {
            _ = tokio::time::sleep(WATCH_EVERY), if watching => {}
            r = target.changed() => if r.is_err() { break },
            r = probes.changed() => if r.is_err() { break },
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}

/// Several servers: each model is loaded on the server routing picks for it, once per
/// time that server came back (the background refresh's facts; nothing probed here).
async fn warm_servers(
    shared: &Shared,
    pool: &Pool,
    wanted: &[(ModelName, Map<String, Value>)],
    asked: &mut HashMap<String, Map<String, Value>>,
) {
    for (model, body) in wanted {
        let Ok(up) = pool.pick(Some(model)) else {
            continue;
        };
        let f = up.known.facts();
        if f.up != Some(true) {
            continue;
        }
        let name = model.to_string();
        let key = format!("{name} {} {}", up.cfg.name, f.comebacks);
        if asked.get(&key) == Some(body) {
            continue;
        }
        load(shared, &up, &name, body).await;
        asked.insert(key, body.clone());
    }
}

/// The models to keep warm and the body of each one's load request. A model whose
/// policy cannot make one (never, for a checked configuration) is left out, said once.
fn wanted(config: &Config) -> Vec<(ModelName, Map<String, Value>)> {
    config
        .preloads()
        .into_iter()
        .filter_map(|m| match protocol::policy::load_request(config, &m) {
            Ok(body) => Some((m, body)),
            Err(e) => {
                tracing::warn!(model = %m, error = %e, "preload skipped: no load request for this model's policy");
                None
            }
        })
        .collect()
}

/// Asks Ollama to load one model; logs and counts how it went.
async fn load(shared: &Shared, up: &Upstream, model: &str, body: &Map<String, Value>) {
    let started = Instant::now();
    let field = |v: Option<&Value>| v.map_or_else(|| "-".to_owned(), Value::to_string);
    let num_ctx = field(body.get("options").and_then(|o| o.get("num_ctx")));
    let keep_alive = field(body.get("keep_alive"));
    match ask(up, body).await {
        Ok(()) => {
            shared.metrics.preloaded(model, true);
            tracing::info!(model, num_ctx = %num_ctx, keep_alive = %keep_alive, ms = started.elapsed().as_millis() as u64, "preloaded model");
        }
        Err(e) => {
            shared.metrics.preloaded(model, false);
            tracing::warn!(model, error = %e, "preload failed (requests still work: the model loads on first use); retried when Ollama comes back or on reload");
        }
    }
}

/// The load request and its answer: a success status and no error in the body.
async fn ask(up: &Upstream, body: &Map<String, Value>) -> Result<(), String> {
    let bytes = Bytes::from(serde_json::to_vec(body).map_err(|e| e.to_string())?);
    let mark = (PRELOAD_HEADER, HeaderValue::from_static("1"));
    let resp = up
        .send_marked(
            Method::POST,
            "/api/generate",
            &HeaderMap::new(),
            Some("application/json"),
            bytes,
            Some(mark),
        )
        .await
        .map_err(|e| match e.detail {
            Some(d) => format!("{} ({d})", e.message),
            None => e.message,
        })?;
    let status = resp.status();
    let answer = tokio::time::timeout(up.cfg.idle_timeout, resp.into_body().collect())
        .await
        .map_err(|_| format!("no answer within {:?} (idle_timeout)", up.cfg.idle_timeout))?
        .map_err(|e| e.to_string())?
        .to_bytes();
    let v: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    if let Some(e) = v.get("error") {
        return Err(format!("Ollama answered {status}: {e}"));
    }
    if !status.is_success() {
        return Err(format!("Ollama answered {status}"));
    }
    Ok(())
}
