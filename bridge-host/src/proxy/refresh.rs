//! Several servers' facts, refreshed in the background: every `[upstream]
//! refresh_interval` (jittered by up to a tenth, so bridges do not probe in step) and
//! at once when a request's connection to a server failed. Each round asks every server
//! for its version (a down server is probed with nothing else), its models (`/api/tags`)
//! and its loaded models (`/api/ps`); a down server is asked again every second at
//! least, and is back once it answers. Never on a request's path. With a single server
//! nothing runs: its health is the on-demand tracker of [`super::health`].

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::BodyExt;
use protocol::ModelName;
use serde_json::Value;

use super::ctx::Shared;
use super::pool::Pool;
use super::upstream::Upstream;

/// Shortest gap between two rounds (a burst of failed connections is one round).
const MIN_GAP: Duration = Duration::from_millis(200);
/// A down server is probed at least this often, whatever `refresh_interval` is.
const DOWN_EVERY: Duration = Duration::from_secs(1);
/// How long a probe waits for an answer beyond the connect timeout.
const PROBE_EXTRA: Duration = Duration::from_secs(2);

/// Starts refreshing `pool`'s servers (several only); the task ends once the pool is
/// replaced by a reload and no request uses it any more.
pub fn spawn(pool: &Arc<Pool>, shared: Arc<Shared>) {
    if !pool.is_multi() {
        return;
    }
    let weak = Arc::downgrade(pool);
    let wake = pool.wake.clone();
    let interval = pool.first().cfg.refresh_interval;
    tokio::spawn(async move {
        let mut round: u64 = 0;
        loop {
            let Some(any_down) = refresh(&weak, &shared).await else {
                return;
            };
            round = round.wrapping_add(1);
            tokio::time::sleep(MIN_GAP).await;
            let every = match any_down {
                true => interval.min(DOWN_EVERY),
                false => interval,
            };
            tokio::select! {
                () = tokio::time::sleep(jittered(every, round)) => {}
                () = wake.notified() => {}
            }
        }
    });
}

/// One round over every server: whether one is down; `None` once the pool is gone.
async fn refresh(pool: &Weak<Pool>, shared: &Shared) -> Option<bool> {
    let servers = pool.upgrade().map(|p| p.servers.clone())?;
    let rounds: Vec<_> = servers
        .iter()
        .map(|s| tokio::spawn(refresh_one(s.clone())))
        .collect();
    for r in rounds {
        let _ = r.await;
    }
    for s in &servers {
        let (f, q) = (s.known.facts(), s.queue.as_ref().map(|q| q.view()));
        let (running, waiting) = q.map_or((0, 0), |v| (v.running, v.waiting));
        let server = &s.cfg.name;
        shared
            .metrics
            .server(server, f.is_up(), f.loaded.len(), running, waiting);
    }
    Some(servers.iter().any(|s| !s.known.facts().is_up()))
}

/// `interval` ± a tenth, varied by the round and the clock (no RNG needed).
fn jittered(interval: Duration, round: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let x = (nanos ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15)) % 2001;
    let tenth = interval / 10;
    (interval - tenth) + tenth.mul_f64(x as f64 / 1000.0)
}

async fn refresh_one(up: Arc<Upstream>) {
    let result = async {
        let version = get(&up, "/api/version").await?;
        let tags = names(&get(&up, "/api/tags").await?);
        let loaded = names(&get(&up, "/api/ps").await?);
        let version = version["version"].as_str().unwrap_or("?").to_owned();
        Ok::<_, String>((version, tags, loaded))
    }
    .await;
    let (name, base) = (&up.cfg.name, &up.cfg.base);
    match result {
        Ok((version, tags, loaded)) => {
            if up.known.reached(version, tags, loaded) {
                tracing::info!(server = %name, upstream = %base, "ollama server is reachable again");
            }
        }
        Err(e) => {
            if up.known.mark_down(&e) {
                tracing::warn!(server = %name, upstream = %base, error = %e, "ollama server is down: its requests go to the others until it answers again");
            }
        }
    }
}

/// A small JSON answer of the server.
async fn get(up: &Upstream, path: &'static str) -> Result<Value, String> {
    let limit = up.cfg.connect_timeout + PROBE_EXTRA;
    let ask = async {
        let resp = up
            .send(Method::GET, path, &HeaderMap::new(), None, Bytes::new())
            .await
            .map_err(|e| e.message)?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("{path}: HTTP {status}"));
        }
        serde_json::from_slice::<Value>(&body).map_err(|e| format!("{path}: not JSON: {e}"))
    };
    tokio::time::timeout(limit, ask)
        .await
        .map_err(|_| format!("{path}: no answer within {limit:?}"))?
}

/// The model names of a tags or ps answer.
fn names(v: &Value) -> Vec<ModelName> {
    v["models"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["name"].as_str().or(m["model"].as_str()))
                .filter_map(|n| ModelName::parse(n).ok())
                .collect()
        })
        .unwrap_or_default()
}
