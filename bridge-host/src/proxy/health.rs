//! The upstream's health, one tracker for every listener: what Ollama answered to the
//! last probe (its version, then its models), probed at most once per [`MAX_AGE`] however
//! many ask. A status call reads it and costs Ollama nothing more; every caller that
//! finds the reading too old waits for the one probe in progress (or starts it). The
//! probe runs in its own task, so a caller that goes away does not cut it short.
//! Reachability changes are logged once, naming the upstream (the host log may; the
//! sandbox's answers never do).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::BodyExt;
use protocol::error::{BridgeError, Reason};
use protocol::route::STARTUP_PROBE_HEADER;
use serde_json::Value;
use tokio::sync::watch;

use super::upstream::Upstream;

/// A reading younger than this is answered without asking Ollama.
pub const MAX_AGE: Duration = Duration::from_secs(1);
/// How long a probe waits for Ollama beyond the connect timeout.
const PROBE_EXTRA: Duration = Duration::from_secs(2);

/// What one probe found.
pub struct Reading {
    /// When the probe ended.
    pub at: Instant,
    /// Ollama's `/api/version` answer, or why there is none (never naming the upstream).
    pub version: Result<Value, String>,
    /// The names of the models Ollama has (empty when it did not say).
    pub models: Vec<String>,
    /// The upstream probed.
    upstream: Arc<Upstream>,
}

/// The tracker; clones share it.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Bumped when a probe ends.
    done: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    last: Option<Arc<Reading>>,
    probing: bool,
    /// Times a probe found Ollama reachable after one found it not (for preloads).
    comebacks: u64,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    pub fn new() -> Health {
        Health {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                done: watch::channel(0).0,
            }),
        }
    }

    /// The health of `up`, read at most [`MAX_AGE`] ago.
    pub async fn reading(&self, up: &Arc<Upstream>) -> Arc<Reading> {
        loop {
            let mut done = {
                let mut st = self.inner.lock();
                if let Some(r) = st.last.as_ref().filter(|r| fresh(r, up)) {
                    return r.clone();
                }
                if !st.probing {
                    st.probing = true;
                    tokio::spawn(probe_task(self.inner.clone(), up.clone(), None));
                }
                // Subscribed under the lock: the end of the probe in progress is seen.
                self.inner.done.subscribe()
            };
            let _ = done.changed().await;
        }
    }
}

impl Health {
    /// `serve`'s probe at start, in its own task (readiness does not wait for it): when
    /// Ollama cannot be reached, the warning (naming the upstream and the fix) is logged
    /// now rather than at the first request. A probe already running is left alone.
    pub fn probe_at_start(&self, up: &Arc<Upstream>) {
        let mut st = self.inner.lock();
        if !st.probing {
            st.probing = true;
            let mark = (STARTUP_PROBE_HEADER, HeaderValue::from_static("start"));
            tokio::spawn(probe_task(self.inner.clone(), up.clone(), Some(mark)));
        }
    }
}

impl Health {
    /// Fires after each probe (whoever asked for it).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.done.subscribe()
    }

    /// How many times Ollama was found reachable again after being found unreachable.
    pub fn comebacks(&self) -> u64 {
        self.inner.lock().comebacks
    }
}

fn fresh(r: &Reading, up: &Arc<Upstream>) -> bool {
    Arc::ptr_eq(&r.upstream, up) && r.at.elapsed() < MAX_AGE
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Ends a probe however its task ends: the reading (if any) is kept and waiters wake.
struct Ending {
    inner: Arc<Inner>,
    reading: Option<Arc<Reading>>,
}

impl Drop for Ending {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        st.probing = false;
        if let Some(r) = self.reading.take() {
            // Changes of reachability, once each.
            let was_up = st.last.as_ref().map(|l| l.version.is_ok());
            let base = &r.upstream.cfg.base;
            match (&r.version, was_up) {
                (Err(e), None | Some(true)) => tracing::warn!(
                    upstream = %base, error = %e,
                    "Ollama is not reachable at {base}: start it (`ollama serve`, or `systemctl start ollama`) or point [upstream] url (--upstream) at it; until then requests get 502"
                ),
                (Ok(_), Some(false)) => {
                    st.comebacks += 1;
                    tracing::info!(upstream = %base, "Ollama is reachable again")
                }
                _ => {}
            }
            st.last = Some(r);
        }
        drop(st);
        self.inner.done.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// A header marking a probe (the one at start).
type Mark = Option<(&'static str, HeaderValue)>;

async fn probe_task(inner: Arc<Inner>, up: Arc<Upstream>, mark: Mark) {
    let mut ending = Ending {
        inner,
        reading: None,
    };
    let (version, models) = probe(&up, mark).await;
    ending.reading = Some(Arc::new(Reading {
        at: Instant::now(),
        version,
        models,
        upstream: up,
    }));
}

/// Asks Ollama for its version and its models (both small answers).
async fn probe(up: &Upstream, mark: Mark) -> (Result<Value, String>, Vec<String>) {
    let limit = up.cfg.connect_timeout + PROBE_EXTRA;
    let get = |path: &'static str| {
        let mark = mark.clone();
        async move {
            let resp = up
                .send_marked(
                    Method::GET,
                    path,
                    &HeaderMap::new(),
                    None,
                    Bytes::new(),
                    mark,
                )
                .await?;
            let status = resp.status();
            let body = tokio::time::timeout(limit, resp.into_body().collect())
                .await
                .map_err(|_| BridgeError::new(Reason::UpstreamTimeout, "no answer in time"))?
                .map_err(|e| BridgeError::new(Reason::UpstreamError, e.to_string()))?
                .to_bytes();
            if status.as_u16() == Reason::LoopDetected.status() {
                return Err(BridgeError::new(
                Reason::LoopDetected,
                "loop detected: the bridge's upstream leads back to a bridge listener, not to Ollama (fix [upstream] url)",
            ));
            }
            if !status.is_success() {
                return Err(BridgeError::new(
                    Reason::UpstreamError,
                    format!("HTTP {status}"),
                ));
            }
            serde_json::from_slice::<Value>(&body)
                .map_err(|e| BridgeError::new(Reason::UpstreamError, format!("not JSON: {e}")))
        }
    };
    let version = match tokio::time::timeout(limit, get("/api/version")).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return (Err(e.message), Vec::new()),
        Err(_) => return (Err(format!("no answer within {limit:?}")), Vec::new()),
    };
    let models = match tokio::time::timeout(limit, get("/api/tags")).await {
        Ok(Ok(v)) => v["models"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    (Ok(version), models)
}
