//! The configuration file (the README's reference): TOML, unknown keys refused, parsed into raw
//! serde types and then validated into the checked [`Config`] the daemon runs on.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::limits::Limits;
use crate::listen::ListenAddr;
use crate::model::ModelPattern;
use crate::ollama_opts::KeepAlive;
use crate::route::EndpointClass;

mod defaults;
mod found;
mod privileges;
mod raw;
mod servers;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_more;
#[cfg(test)]
mod tests_servers;
mod validate;
mod values;

pub use crate::limits::DEFAULT_MAX_BODY;
pub use defaults::{DefaultsEnv, QuickFlags, DEFAULT_UPSTREAM};
pub use privileges::{check_name, Privileges, DEFAULT_USER, FALLBACK_USER};

/// Largest context length a policy may set.
pub const MAX_NUM_CTX: u64 = 1 << 24;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The first server (with a single `url`, the only one, named `default`): the
    /// shared `[upstream]` keys are read from it.
    pub upstream: Upstream,
    /// Every upstream server, `upstream` first (`[[upstream.server]]` in order).
    pub servers: Vec<Upstream>,
    pub audit: AuditSettings,
    pub sandboxes: Vec<Sandbox>,
    /// Per-model policies, most specific first.
    pub models: Vec<ModelPolicy>,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<MetricsListen>,
    /// Whom `serve` runs as after start-up.
    pub privileges: Privileges,
    /// Values that are allowed but surely not what was meant, each with its line.
    pub warnings: Vec<ConfigError>,
}

/// The metrics listener: host-only by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsListen {
    /// A loopback TCP address.
    Tcp(std::net::SocketAddr),
    /// A unix socket path.
    Unix(PathBuf),
}

impl fmt::Display for MetricsListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsListen::Tcp(a) => write!(f, "{a}"),
            MetricsListen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Parses `[metrics] listen`.
pub fn parse_metrics_listen(s: &str) -> Result<MetricsListen, String> {
    if let Some(p) = s.strip_prefix("unix:") {
        if p.starts_with('/') {
            return Ok(MetricsListen::Unix(PathBuf::from(p)));
        }
        return Err(format!(
            "[metrics] listen {s:?}: the socket path must be absolute"
        ));
    }
    match s.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_loopback() => Ok(MetricsListen::Tcp(a)),
        Ok(a) => Err(format!(
            "[metrics] listen {a}: metrics must stay on the host: use a loopback address such as 127.0.0.1:9464, or unix:/path"
        )),
        Err(_) => Err(format!(
            "[metrics] listen {s:?}: expected IP:PORT (loopback) or unix:/path, e.g. \"127.0.0.1:9464\""
        )),
    }
}

/// Where Ollama is: one server, with the shared `[upstream]` keys and its overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The server's name (`default` with a single `url`).
    pub name: String,
    /// Only these models are routed to the server (empty: any it has).
    pub models: Vec<ModelPattern>,
    /// With several servers: how often each one's models are read again (jittered).
    pub refresh_interval: Duration,
    /// `http://host:port` without a trailing slash.
    pub base: String,
    /// `host:port`, sent as the `Host` header (Ollama checks it).
    pub authority: String,
    pub connect_timeout: Duration,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// A streamed request with no response headers sent this long after its arrival
    /// gets the bridge's own 200 and stream headers (`None`: `"off"`).
    pub early_headers: Option<Duration>,
    /// Model requests Ollama works on at once; the rest wait in the bridge's fair queue
    /// (`None`: `"off"`, no queue).
    pub max_parallel: Option<u32>,
}

/// `[upstream] max_parallel` when the configuration does not set it.
pub const DEFAULT_MAX_PARALLEL: u32 = 4;
/// The largest `max_parallel` (and `weight`): larger is a typo, not a setting.
pub const MAX_PARALLEL_LIMIT: u32 = 1024;

/// The server's name with a single `[upstream] url`.
pub const DEFAULT_SERVER_NAME: &str = "default";

/// `[upstream] refresh_interval` when the configuration does not set it.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// `[upstream] early_headers` when the configuration does not set it.
pub const DEFAULT_EARLY_HEADERS: Duration = Duration::from_secs(2);

/// The audit log settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub path: PathBuf,
    pub log_prompts: bool,
}

/// `[audit] path = "-"`: the records go to the daemon's standard output (for a container
/// log shipper), which is never reopened, and token budgets are not saved.
pub const AUDIT_TO_STDOUT: &str = "-";

impl AuditSettings {
    /// The records go to standard output (`path = "-"`).
    pub fn to_stdout(&self) -> bool {
        self.path.as_os_str() == AUDIT_TO_STDOUT
    }
}

/// A sandbox name (`[[sandbox]] name`): `[A-Za-z0-9_.-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SandboxName(String);

impl SandboxName {
    /// Checks a name.
    pub fn new(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if ok {
            Ok(SandboxName(s.to_owned()))
        } else {
            Err(format!(
                "invalid sandbox name {s:?}: use 1-64 of A-Z a-z 0-9 _ - ."
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SandboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One sandbox: its listener and its policy.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub name: SandboxName,
    pub listen: ListenAddr,
    pub socket_mode: u32,
    pub socket_owner: Option<(u32, u32)>,
    pub models: Vec<ModelPattern>,
    pub endpoints: BTreeSet<EndpointClass>,
    pub openai_via_native: bool,
    pub max_concurrent: Option<u32>,
    /// The sandbox's share of a saturated upstream in the fair queue (default 1).
    pub weight: u32,
    pub max_body: u64,
    pub vsock_cid: Option<u32>,
    /// Whether the guest may hand connections over on this (unix) listener.
    pub handoff: bool,
    /// Every other limit (queue, rate, head, connections, client timeouts).
    pub limits: Limits,
    /// `tokens_per_hour`, `tokens_per_day` (none by default).
    pub tokens: crate::budget::TokenBudget,
}

/// How a model's context length is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumCtxPolicy {
    /// Always send this value.
    Pin(u64),
    /// Clamp what was asked for into `[min, max]`. When nothing was asked, send
    /// `default`, else `min`, else `max`: whatever the sandbox sends, the context Ollama
    /// runs with lies within the bounds.
    Clamp {
        min: Option<u64>,
        max: Option<u64>,
        default: Option<u64>,
    },
}

/// How a model's `keep_alive` is decided (without one, a sandbox's is removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlivePolicy {
    /// `keep_alive`: sent with every request, replacing the sandbox's.
    Pin(KeepAlive),
    /// `keep_alive_max`: a sandbox's positive keep_alive passes, capped at this.
    Max(Duration),
}

/// `[model."<glob>"]`. A table sets any of three groups; for a model, each group comes
/// from the most specific table that sets it (pinned options one by one).
#[derive(Debug, Clone)]
pub struct ModelPolicy {
    pub pattern: ModelPattern,
    /// `None` when the table has no num_ctx key.
    pub num_ctx: Option<NumCtxPolicy>,
    /// Runner options inserted into every request (names and types checked).
    pub options: serde_json::Map<String, serde_json::Value>,
    /// `None` when the table has neither `keep_alive` nor `keep_alive_max`.
    pub keep_alive: Option<KeepAlivePolicy>,
    /// `tool_salvage`; `None` when the table does not set it.
    pub tool_salvage: Option<bool>,
    /// `preload = true` (only on a table naming one model exactly).
    pub preload: bool,
}

/// What the configuration says about one model's load: its pinned runner options and its
/// keep_alive policy (num_ctx is [`Config::num_ctx_policy`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadPolicy {
    pub options: serde_json::Map<String, serde_json::Value>,
    pub keep_alive: Option<KeepAlivePolicy>,
}

/// One configuration error, with the line it is on when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Every error found in a configuration.
#[derive(Debug, Clone, Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Config {
    /// The `[model]` tables matching a model, most specific first.
    fn model_tables<'a>(
        &'a self,
        model: &'a crate::ModelName,
    ) -> impl Iterator<Item = &'a ModelPolicy> + 'a {
        self.models.iter().filter(move |m| m.pattern.matches(model))
    }

    /// The context policy for a model: that of the most specific matching `[model]`
    /// table with a num_ctx key.
    pub fn num_ctx_policy(&self, model: &crate::ModelName) -> Option<NumCtxPolicy> {
        self.model_tables(model).find_map(|m| m.num_ctx)
    }

    /// The load policy for a model: each pinned option from the most specific matching
    /// table that pins it; keep_alive from the most specific one that sets it.
    pub fn load_policy(&self, model: &crate::ModelName) -> LoadPolicy {
        let mut p = LoadPolicy::default();
        for m in self.model_tables(model) {
            for (k, v) in &m.options {
                if !p.options.contains_key(k) {
                    p.options.insert(k.clone(), v.clone());
                }
            }
            p.keep_alive = p.keep_alive.or(m.keep_alive);
        }
        p
    }

    /// The models to keep warm (`preload = true`), by their canonical names.
    pub fn preloads(&self) -> Vec<crate::ModelName> {
        self.models
            .iter()
            .filter(|m| m.preload)
            .filter_map(|m| crate::ModelName::parse(m.pattern.as_str()).ok())
            .collect()
    }

    /// Whether tool calls a model printed as text are salvaged: the most specific
    /// matching table that says so decides; by default they are.
    pub fn tool_salvage(&self, model: &crate::ModelName) -> bool {
        self.model_tables(model)
            .find_map(|m| m.tool_salvage)
            .unwrap_or(true)
    }
}

impl NumCtxPolicy {
    /// The value to send given what the client asked for (`None` = leave it unset).
    pub fn apply(self, requested: Option<u64>) -> Option<u64> {
        match self {
            NumCtxPolicy::Pin(n) => Some(n),
            NumCtxPolicy::Clamp { min, max, default } => {
                let mut v = requested.or(default).or(min).or(max)?;
                if let Some(lo) = min {
                    v = v.max(lo);
                }
                if let Some(hi) = max {
                    v = v.min(hi);
                }
                Some(v)
            }
        }
    }
}
