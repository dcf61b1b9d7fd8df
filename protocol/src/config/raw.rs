//! The configuration file as written: serde types mirroring the TOML keys one for one,
//! unknown keys refused, a doc comment on every key. [`super::validate`] checks them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::route::EndpointClass;
use crate::units::{ByteSize, HumanDuration};

use super::privileges;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    /// Where Ollama is and how long to wait for it.
    #[serde(default)]
    pub(super) upstream: RawUpstream,
    /// The audit log.
    #[serde(default)]
    pub(super) audit: RawAudit,
    /// One `[[sandbox]]` per listener.
    #[serde(default)]
    pub(super) sandbox: Vec<toml::Spanned<RawSandbox>>,
    /// Per-model policy, keyed by a model glob.
    #[serde(default)]
    pub(super) model: BTreeMap<String, toml::Spanned<RawModel>>,
    /// The opt-in Prometheus endpoint.
    pub(super) metrics: Option<RawMetrics>,
    /// Whom `serve` runs as once its sockets and audit log are open.
    #[serde(default)]
    pub(super) privileges: privileges::RawPrivileges,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    /// A loopback `IP:PORT` or `unix:/path`: never reachable from a sandbox.
    pub(super) listen: toml::Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    /// Ollama's base URL, `http://host:port`.
    pub(super) url: Option<toml::Spanned<String>>,
    /// Time to establish the TCP connection to Ollama.
    pub(super) connect_timeout: Option<HumanDuration>,
    /// Time until the first byte of Ollama's answer (model loads are slow).
    pub(super) header_timeout: Option<HumanDuration>,
    /// Longest silence between two chunks of a streamed answer.
    pub(super) idle_timeout: Option<HumanDuration>,
    /// When a streamed request gets the bridge's own headers, or `"off"`.
    pub(super) early_headers: Option<OrOff>,
    /// Model requests Ollama works on at once (the rest queue fairly), or `"off"`.
    pub(super) max_parallel: Option<CountOrOff>,
    /// With several servers: how often each one's models (tags, ps) are read again.
    pub(super) refresh_interval: Option<HumanDuration>,
    /// Several Ollama servers (`[[upstream.server]]`) instead of `url`.
    #[serde(default)]
    pub(super) server: Vec<toml::Spanned<RawServer>>,
}

/// One `[[upstream.server]]`: its name, URL, the models routed to it, and the shared
/// `[upstream]` keys it overrides.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    /// The server's name in the audit log, metrics and `bridge-host status`.
    pub(super) name: String,
    /// The server's base URL, `http://host:port`.
    pub(super) url: String,
    /// Globs over canonical model names: only these are routed here (default: any).
    pub(super) models: Option<Vec<String>>,
    /// Overrides `[upstream] connect_timeout`.
    pub(super) connect_timeout: Option<HumanDuration>,
    /// Overrides `[upstream] header_timeout`.
    pub(super) header_timeout: Option<HumanDuration>,
    /// Overrides `[upstream] idle_timeout`.
    pub(super) idle_timeout: Option<HumanDuration>,
    /// Overrides `[upstream] max_parallel`.
    pub(super) max_parallel: Option<CountOrOff>,
}

/// A duration, or `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct OrOff(pub(super) Option<std::time::Duration>);

impl TryFrom<String> for OrOff {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.trim() == "off" {
            return Ok(OrOff(None));
        }
        crate::units::parse_duration(&s)
            .map(|d| OrOff(Some(d)))
            .map_err(|e| format!("{e}, or \"off\""))
    }
}

/// A count, or `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CountOrOff {
    Count(i64),
    Off,
}

impl<'de> Deserialize<'de> for CountOrOff {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = CountOrOff;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number or \"off\"")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<CountOrOff, E> {
                Ok(CountOrOff::Count(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<CountOrOff, E> {
                Ok(CountOrOff::Count(i64::try_from(n).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<CountOrOff, E> {
                if s.trim() == "off" {
                    Ok(CountOrOff::Off)
                } else {
                    Err(E::custom(format!("{s:?}: expected a number or \"off\"")))
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    /// The JSON-lines audit file (never inside a sandbox).
    pub(super) path: Option<PathBuf>,
    /// Record prompts and outputs too. Off by default: they may hold secrets.
    #[serde(default)]
    pub(super) log_prompts: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSandbox {
    /// The sandbox's name in logs, errors and the audit record.
    pub(super) name: String,
    /// `unix:/path`, `vsock:PORT` or `vsock-uds:/path_PORT`.
    pub(super) listen: toml::Spanned<String>,
    /// Octal permission bits of the unix socket, e.g. "0660".
    pub(super) socket_mode: Option<String>,
    /// `uid:gid` owning the socket and its directory.
    pub(super) socket_owner: Option<String>,
    /// Globs over canonical model names; `"*"` = every local model.
    pub(super) models: Option<Vec<String>>,
    /// Endpoint classes from the README's endpoint table.
    pub(super) endpoints: Option<Vec<EndpointClass>>,
    /// Serve /v1/chat/completions, /v1/completions and /v1/embeddings through the native
    /// API (default true; false passes them to Ollama's own /v1 layer).
    #[serde(default = "default_true")]
    pub(super) openai_via_native: bool,
    /// Requests in flight for this sandbox; more get 429.
    pub(super) max_concurrent: Option<u32>,
    /// Share of a saturated upstream in the fair queue (default 1).
    pub(super) weight: Option<i64>,
    /// Largest request body accepted.
    pub(super) max_body: Option<ByteSize>,
    /// Request-body bytes this sandbox's requests may hold at once (default 4 × max_body).
    pub(super) max_body_buffer: Option<ByteSize>,
    /// Wait at most this long for a `max_concurrent` slot or a place in the upstream's
    /// fair queue before answering 429.
    pub(super) queue_timeout: Option<HumanDuration>,
    /// Token bucket: a burst of N requests, refilled at N per minute; more get 429.
    pub(super) requests_per_minute: Option<u32>,
    /// Header fields in one request head; more get 431.
    pub(super) max_headers: Option<usize>,
    /// Bytes of one request head (request line included); more get 431.
    pub(super) max_header_bytes: Option<ByteSize>,
    /// Open connections on this listener; more get a 503 and are closed.
    pub(super) max_connections: Option<u32>,
    /// Idle time between two requests on a keep-alive connection ("0s": no keep-alive).
    pub(super) keepalive_timeout: Option<HumanDuration>,
    /// Time to receive a complete request head (slowloris defence).
    pub(super) request_header_timeout: Option<HumanDuration>,
    /// For vsock listeners: accept only this peer CID.
    pub(super) vsock_cid: Option<u32>,
    /// Token budget over the last hour (prompt + completion); spent: 429 budget_exhausted.
    pub(super) tokens_per_hour: Option<u64>,
    /// Token budget over the last day (prompt + completion).
    pub(super) tokens_per_day: Option<u64>,
    /// Accept connections the guest hands over on the unix socket (`SCM_RIGHTS`) and
    /// serve them directly (default true on `unix:` listeners; an error on vsock ones,
    /// which keep the relay).
    pub(super) handoff: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    /// Pin `options.num_ctx` to this value.
    pub(super) num_ctx: Option<u64>,
    /// Raise a smaller requested (or absent) `num_ctx` to this.
    pub(super) num_ctx_min: Option<u64>,
    /// Lower a larger requested `num_ctx` to this.
    pub(super) num_ctx_max: Option<u64>,
    /// The context sent when a request asks for none (within min/max).
    pub(super) num_ctx_default: Option<u64>,
    /// Runner (load-time) options inserted into every request, e.g. `{ num_gpu = 99 }`.
    pub(super) options: Option<toml::Table>,
    /// The keep_alive sent with every request (replacing the sandbox's): a Go duration
    /// string or a number of seconds, negative = forever, 0 = unload after each request.
    pub(super) keep_alive: Option<toml::Value>,
    /// The longest keep_alive a sandbox may ask for; without it (or `keep_alive`), the
    /// sandbox's keep_alive is removed.
    pub(super) keep_alive_max: Option<toml::Value>,
    /// Recover tool calls the model printed as text (default true).
    pub(super) tool_salvage: Option<bool>,
    /// Load the model at start, after a reload that adds it, and when Ollama comes back
    /// (exact model names only).
    #[serde(default)]
    pub(super) preload: bool,
}

fn default_true() -> bool {
    true
}
