//! The configuration file (CONTRACT.md): TOML, unknown keys refused, parsed into raw
//! serde types and then validated into the checked [`Config`] the daemon runs on.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::limits::{Limits, RawLimits};
use crate::listen::ListenAddr;
use crate::model::ModelPattern;
use crate::route::EndpointClass;
use crate::units::{ByteSize, HumanDuration};

mod privileges;
pub use privileges::{check_name, Privileges, DEFAULT_USER, FALLBACK_USER};

/// Default `max_body` of a sandbox.
pub const DEFAULT_MAX_BODY: u64 = 32 << 20;
/// Largest context length a policy may set.
pub const MAX_NUM_CTX: u64 = 1 << 24;

// ---------------------------------------------------------------- raw (as written)

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Where Ollama is and how long to wait for it.
    #[serde(default)]
    upstream: RawUpstream,
    /// The audit log.
    #[serde(default)]
    audit: RawAudit,
    /// One `[[sandbox]]` per listener.
    #[serde(default)]
    sandbox: Vec<toml::Spanned<RawSandbox>>,
    /// Per-model policy, keyed by a model glob.
    #[serde(default)]
    model: BTreeMap<String, toml::Spanned<RawModel>>,
    /// The opt-in Prometheus endpoint.
    metrics: Option<RawMetrics>,
    /// Whom `serve` runs as once its sockets and audit log are open.
    #[serde(default)]
    privileges: privileges::RawPrivileges,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    /// A loopback `IP:PORT` or `unix:/path`: never reachable from a sandbox.
    listen: toml::Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    /// Ollama's base URL, `http://host:port`.
    url: Option<toml::Spanned<String>>,
    /// Time to establish the TCP connection to Ollama.
    connect_timeout: Option<HumanDuration>,
    /// Time until the first byte of Ollama's answer (model loads are slow).
    header_timeout: Option<HumanDuration>,
    /// Longest silence between two chunks of a streamed answer.
    idle_timeout: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    /// The JSON-lines audit file (never inside a sandbox).
    path: Option<PathBuf>,
    /// Record prompts and outputs too. Off by default: they may hold secrets.
    #[serde(default)]
    log_prompts: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSandbox {
    /// The sandbox's name in logs, errors and the audit record.
    name: String,
    /// `unix:/path`, `vsock:PORT` or `vsock-uds:/path_PORT`.
    listen: ListenAddr,
    /// Octal permission bits of the unix socket, e.g. "0660".
    socket_mode: Option<String>,
    /// `uid:gid` owning the socket and its directory.
    socket_owner: Option<String>,
    /// Globs over canonical model names; `"*"` = every local model.
    models: Option<Vec<String>>,
    /// Endpoint classes from DESIGN.md's table.
    endpoints: Option<Vec<EndpointClass>>,
    /// Serve /v1/chat/completions and /v1/embeddings through the native API.
    #[serde(default)]
    openai_via_native: bool,
    /// Requests in flight for this sandbox; more get 429.
    max_concurrent: Option<u32>,
    /// Largest request body accepted.
    max_body: Option<ByteSize>,
    /// With max_concurrent: wait this long for a free slot before answering 429.
    queue_timeout: Option<HumanDuration>,
    /// Token bucket: a burst of N requests, refilled at N per minute; more get 429.
    requests_per_minute: Option<u32>,
    /// Header fields in one request head; more get 431.
    max_headers: Option<usize>,
    /// Bytes of one request head (request line included); more get 431.
    max_header_bytes: Option<ByteSize>,
    /// Open connections on this listener; more get a 503 and are closed.
    max_connections: Option<u32>,
    /// Idle time between two requests on a keep-alive connection ("0s": no keep-alive).
    keepalive_timeout: Option<HumanDuration>,
    /// Time to receive a complete request head (slowloris defence).
    request_header_timeout: Option<HumanDuration>,
    /// For vsock listeners: accept only this peer CID.
    vsock_cid: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    /// Pin `options.num_ctx` to this value.
    num_ctx: Option<u64>,
    /// Raise a smaller requested (or absent) `num_ctx` to this.
    num_ctx_min: Option<u64>,
    /// Lower a larger requested `num_ctx` to this.
    num_ctx_max: Option<u64>,
}

// ---------------------------------------------------------------- checked

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub upstream: Upstream,
    pub audit: AuditSettings,
    pub sandboxes: Vec<Sandbox>,
    /// Per-model policies, most specific first.
    pub models: Vec<ModelPolicy>,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<MetricsListen>,
    /// Whom `serve` runs as after start-up.
    pub privileges: Privileges,
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

/// Where Ollama is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `http://host:port` without a trailing slash.
    pub base: String,
    /// `host:port`, sent as the `Host` header (Ollama checks it).
    pub authority: String,
    pub connect_timeout: Duration,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// The audit log settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub path: PathBuf,
    pub log_prompts: bool,
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
    pub max_body: u64,
    pub vsock_cid: Option<u32>,
    /// Every other limit (queue, rate, head, connections, client timeouts).
    pub limits: Limits,
}

/// How a model's context length is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumCtxPolicy {
    /// Always send this value.
    Pin(u64),
    /// Clamp what was asked for; `min` also applies when nothing was asked.
    Clamp { min: Option<u64>, max: Option<u64> },
}

/// `[model."<glob>"]`.
#[derive(Debug, Clone)]
pub struct ModelPolicy {
    pub pattern: ModelPattern,
    pub num_ctx: NumCtxPolicy,
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

/// What the built-in defaults depend on, read from the environment by the caller.
#[derive(Debug, Clone, Default)]
pub struct DefaultsEnv {
    pub is_root: bool,
    pub xdg_runtime_dir: Option<PathBuf>,
    pub xdg_state_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub uid: u32,
}

impl DefaultsEnv {
    /// Default socket of the `default` sandbox.
    pub fn default_socket(&self) -> PathBuf {
        if self.is_root {
            return PathBuf::from("/run/ollama-bridge/ollama.sock");
        }
        match &self.xdg_runtime_dir {
            Some(d) => d.join("ollama-bridge/ollama.sock"),
            None => PathBuf::from(format!("/tmp/ollama-bridge-{}/ollama.sock", self.uid)),
        }
    }

    /// Default audit log.
    pub fn default_audit(&self) -> PathBuf {
        if self.is_root {
            return PathBuf::from("/var/log/ollama-bridge/audit.jsonl");
        }
        let state = self.xdg_state_home.clone().unwrap_or_else(|| {
            self.home
                .clone()
                .unwrap_or_else(|| PathBuf::from("/tmp"))
                .join(".local/state")
        });
        state.join("ollama-bridge/audit.jsonl")
    }
}

/// The Ollama default.
pub const DEFAULT_UPSTREAM: &str = "http://127.0.0.1:11434";

impl Config {
    /// The built-in configuration used when there is no file.
    pub fn builtin(env: &DefaultsEnv) -> Config {
        Config::quick(
            env,
            ListenAddr::Unix(env.default_socket()),
            DEFAULT_UPSTREAM,
            &[],
        )
        .expect("built-in defaults are valid")
    }

    /// The quick-start configuration (`serve --listen --upstream --allow-model`).
    pub fn quick(
        env: &DefaultsEnv,
        listen: ListenAddr,
        upstream: &str,
        models: &[String],
    ) -> Result<Config, ConfigErrors> {
        let one = |m: String| {
            ConfigErrors(vec![ConfigError {
                line: None,
                message: m,
            }])
        };
        let upstream = parse_upstream(upstream).map_err(one)?;
        let models = if models.is_empty() {
            vec![ModelPattern::parse("*").expect("* is valid")]
        } else {
            models
                .iter()
                .map(|m| ModelPattern::parse(m).map_err(|e| one(format!("--allow-model: {e}"))))
                .collect::<Result<_, _>>()?
        };
        Ok(Config {
            upstream: Upstream {
                connect_timeout: Duration::from_secs(3),
                header_timeout: Duration::from_secs(600),
                idle_timeout: Duration::from_secs(120),
                ..upstream
            },
            audit: AuditSettings {
                path: env.default_audit(),
                log_prompts: false,
            },
            sandboxes: vec![Sandbox {
                name: SandboxName("default".into()),
                listen,
                socket_mode: 0o660,
                socket_owner: None,
                models,
                endpoints: EndpointClass::DEFAULT.into_iter().collect(),
                openai_via_native: false,
                max_concurrent: None,
                max_body: DEFAULT_MAX_BODY,
                vsock_cid: None,
                limits: Limits::default(),
            }],
            models: Vec::new(),
            metrics: None,
            privileges: Privileges::default(),
        })
    }

    /// Parses and validates a configuration file's text.
    pub fn parse(text: &str, env: &DefaultsEnv) -> Result<Config, ConfigErrors> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                line: e.span().map(|s| line_of(s.start)),
                message: e.message().trim().to_owned(),
            }])
        })?;
        let mut errs = Vec::new();
        let mut err = |span: Option<std::ops::Range<usize>>, message: String| {
            errs.push(ConfigError {
                line: span.map(|s| line_of(s.start)),
                message,
            })
        };

        let url_span = raw.upstream.url.as_ref().map(|u| u.span());
        let url = raw
            .upstream
            .url
            .as_ref()
            .map_or(DEFAULT_UPSTREAM, |u| u.get_ref().as_str());
        let upstream = match parse_upstream(url) {
            Ok(u) => u,
            Err(m) => {
                err(url_span, format!("[upstream] url: {m}"));
                parse_upstream(DEFAULT_UPSTREAM).expect("default is valid")
            }
        };
        let upstream = Upstream {
            connect_timeout: raw
                .upstream
                .connect_timeout
                .map_or(Duration::from_secs(3), |d| d.0),
            header_timeout: raw
                .upstream
                .header_timeout
                .map_or(Duration::from_secs(600), |d| d.0),
            idle_timeout: raw
                .upstream
                .idle_timeout
                .map_or(Duration::from_secs(120), |d| d.0),
            ..upstream
        };
        for (name, d) in [
            ("connect_timeout", upstream.connect_timeout),
            ("header_timeout", upstream.header_timeout),
            ("idle_timeout", upstream.idle_timeout),
        ] {
            if d.is_zero() {
                err(None, format!("[upstream] {name} must be greater than zero"));
            }
        }

        let mut sandboxes = Vec::new();
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        for spanned in &raw.sandbox {
            let span = Some(spanned.span());
            let s = spanned.get_ref();
            let name = match SandboxName::new(&s.name) {
                Ok(n) => n,
                Err(m) => {
                    err(span.clone(), m);
                    continue;
                }
            };
            let ctx = format!("sandbox {:?}", s.name);
            if !names.insert(name.clone()) {
                err(
                    span.clone(),
                    format!("{ctx}: the name is used by another [[sandbox]]"),
                );
            }
            if !addrs.insert(s.listen.clone()) {
                err(
                    span.clone(),
                    format!("{ctx}: listen {} is used by another [[sandbox]]", s.listen),
                );
            }
            let socket_mode = match s.socket_mode.as_deref().map(parse_mode) {
                None => 0o660,
                Some(Ok(m)) => m,
                Some(Err(m)) => {
                    err(span.clone(), format!("{ctx}: {m}"));
                    0o660
                }
            };
            let socket_owner = match s.socket_owner.as_deref().map(parse_owner) {
                None => None,
                Some(Ok(o)) => Some(o),
                Some(Err(m)) => {
                    err(span.clone(), format!("{ctx}: {m}"));
                    None
                }
            };
            let mut models = Vec::new();
            for m in s.models.clone().unwrap_or_else(|| vec!["*".into()]) {
                match ModelPattern::parse(&m) {
                    Ok(p) => models.push(p),
                    Err(e) => err(span.clone(), format!("{ctx}: models: {e}")),
                }
            }
            if models.is_empty() && s.models.as_ref().is_some_and(|m| m.is_empty()) {
                err(span.clone(), format!("{ctx}: models is empty; nothing could be used (write \"*\" for every local model)"));
            }
            if s.max_concurrent == Some(0) {
                err(
                    span.clone(),
                    format!("{ctx}: max_concurrent must be at least 1"),
                );
            }
            let max_body = s.max_body.map_or(DEFAULT_MAX_BODY, |b| b.0);
            if max_body == 0 {
                err(
                    span.clone(),
                    format!("{ctx}: max_body must be greater than zero"),
                );
            }
            let limits = RawLimits {
                max_concurrent: s.max_concurrent,
                queue_timeout: s.queue_timeout.map(|d| d.0),
                requests_per_minute: s.requests_per_minute,
                max_headers: s.max_headers,
                max_header_bytes: s.max_header_bytes.map(|b| b.0),
                max_connections: s.max_connections,
                keepalive_timeout: s.keepalive_timeout.map(|d| d.0),
                request_header_timeout: s.request_header_timeout.map(|d| d.0),
            }
            .check()
            .unwrap_or_else(|ms| {
                for m in ms {
                    err(span.clone(), format!("{ctx}: {m}"));
                }
                Limits::default()
            });
            if s.vsock_cid.is_some() && !matches!(s.listen, ListenAddr::Vsock { .. }) {
                err(
                    span.clone(),
                    format!("{ctx}: vsock_cid applies only to vsock: listeners"),
                );
            }
            sandboxes.push(Sandbox {
                name,
                listen: s.listen.clone(),
                socket_mode,
                socket_owner,
                models,
                endpoints: s.endpoints.clone().map_or_else(
                    || EndpointClass::DEFAULT.into_iter().collect(),
                    |e| e.into_iter().collect(),
                ),
                openai_via_native: s.openai_via_native,
                max_concurrent: s.max_concurrent,
                max_body,
                vsock_cid: s.vsock_cid,
                limits,
            });
        }
        if raw.sandbox.is_empty() {
            err(
                None,
                "no [[sandbox]] is configured; add at least one listener".into(),
            );
        }

        let mut models = Vec::new();
        for (glob, spanned) in &raw.model {
            let span = Some(spanned.span());
            let m = spanned.get_ref();
            let ctx = format!("model {glob:?}");
            let pattern = match ModelPattern::parse(glob) {
                Ok(p) => p,
                Err(e) => {
                    err(span, format!("{ctx}: {e}"));
                    continue;
                }
            };
            for v in [m.num_ctx, m.num_ctx_min, m.num_ctx_max]
                .into_iter()
                .flatten()
            {
                if v == 0 || v > MAX_NUM_CTX {
                    err(
                        span.clone(),
                        format!("{ctx}: context lengths must be between 1 and {MAX_NUM_CTX}"),
                    );
                }
            }
            let num_ctx = match (m.num_ctx, m.num_ctx_min, m.num_ctx_max) {
                (Some(n), None, None) => NumCtxPolicy::Pin(n),
                (Some(_), _, _) => {
                    err(span, format!("{ctx}: num_ctx pins the value; use it or num_ctx_min/num_ctx_max, not both"));
                    continue;
                }
                (None, min, max) => {
                    if let (Some(a), Some(b)) = (min, max) {
                        if a > b {
                            err(
                                span.clone(),
                                format!("{ctx}: num_ctx_min {a} is greater than num_ctx_max {b}"),
                            );
                        }
                    }
                    NumCtxPolicy::Clamp { min, max }
                }
            };
            models.push(ModelPolicy { pattern, num_ctx });
        }
        models.sort_by_key(|m| std::cmp::Reverse(m.pattern.specificity()));
        let metrics = match &raw.metrics {
            None => None,
            Some(m) => match parse_metrics_listen(m.listen.get_ref()) {
                Ok(l) => Some(l),
                Err(msg) => {
                    err(Some(m.listen.span()), msg);
                    None
                }
            },
        };
        let privileges = raw.privileges.check().unwrap_or_else(|e| {
            for (span, m) in e {
                err(Some(span), m);
            }
            Privileges::default()
        });

        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
        Ok(Config {
            upstream,
            audit: AuditSettings {
                path: raw.audit.path.unwrap_or_else(|| env.default_audit()),
                log_prompts: raw.audit.log_prompts,
            },
            sandboxes,
            models,
            metrics,
            privileges,
        })
    }

    /// The context policy for a model: the most specific matching `[model]` entry.
    pub fn num_ctx_policy(&self, model: &crate::ModelName) -> Option<NumCtxPolicy> {
        self.models
            .iter()
            .find(|m| m.pattern.matches(model))
            .map(|m| m.num_ctx)
    }
}

impl NumCtxPolicy {
    /// The value to send given what the client asked for (`None` = leave it unset).
    pub fn apply(self, requested: Option<u64>) -> Option<u64> {
        match self {
            NumCtxPolicy::Pin(n) => Some(n),
            NumCtxPolicy::Clamp { min, max } => {
                let mut v = requested.or(min)?;
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

fn parse_upstream(url: &str) -> Result<Upstream, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("{url:?}: only http:// upstreams are supported, e.g. \"http://127.0.0.1:11434\"")
    })?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let valid = !authority.is_empty()
        && !authority.contains(['/', '?', '#', '@', ' '])
        && match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0)
            }
            _ => true,
        };
    if !valid {
        return Err(format!(
            "{url:?}: expected http://HOST[:PORT] with no path, e.g. \"http://127.0.0.1:11434\""
        ));
    }
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok(Upstream {
        base: format!("http://{authority}"),
        authority,
        connect_timeout: Duration::ZERO,
        header_timeout: Duration::ZERO,
        idle_timeout: Duration::ZERO,
    })
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!(
            "socket_mode {s:?}: expected octal permission bits such as \"0660\""
        )),
    }
}

fn parse_owner(s: &str) -> Result<(u32, u32), String> {
    s.split_once(':')
        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
        .ok_or_else(|| {
            format!("socket_owner {s:?}: expected numeric \"uid:gid\", e.g. \"1000:1000\"")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> DefaultsEnv {
        DefaultsEnv {
            is_root: true,
            ..Default::default()
        }
    }

    const EXAMPLE: &str = r#"
[upstream]
url = "http://127.0.0.1:11434"
connect_timeout = "3s"
header_timeout = "10m"
idle_timeout = "2m"

[audit]
path = "/var/log/ollama-bridge/audit.jsonl"

[[sandbox]]
name = "automation"
listen = "unix:/run/ollama-bridge/automation/ollama.sock"
socket_mode = "0660"
socket_owner = "1000:1000"
models = ["qwen2.5:7b", "llama3.2:*"]
endpoints = ["chat", "generate", "embed", "list", "openai"]
openai_via_native = true
max_concurrent = 4
max_body = "32MiB"

[model."qwen2.5:7b"]
num_ctx = 32768
"#;

    #[test]
    fn contract_example_parses() {
        let c = Config::parse(EXAMPLE, &env()).unwrap();
        assert_eq!(c.upstream.authority, "127.0.0.1:11434");
        assert_eq!(c.upstream.header_timeout, Duration::from_secs(600));
        let s = &c.sandboxes[0];
        assert_eq!(s.name.as_str(), "automation");
        assert_eq!(s.socket_owner, Some((1000, 1000)));
        assert_eq!(s.max_body, 32 << 20);
        assert_eq!(s.max_concurrent, Some(4));
        let q = crate::ModelName::parse("qwen2.5:7b").unwrap();
        assert_eq!(c.num_ctx_policy(&q), Some(NumCtxPolicy::Pin(32768)));
    }

    #[test]
    fn unknown_key_has_its_line() {
        let e = Config::parse(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\nbogus_key = 1\n",
            &env(),
        )
        .unwrap_err();
        assert_eq!(e.0[0].line, Some(3), "{e}");
        assert!(e.0[0].message.contains("bogus_key"), "{e}");
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let text = r#"
[upstream]
url = "https://x"

[[sandbox]]
name = "a"
listen = "unix:/a.sock"
socket_mode = "999"

[[sandbox]]
name = "a"
listen = "unix:/a.sock"

[model."m"]
num_ctx = 4
num_ctx_max = 8
"#;
        let e = Config::parse(text, &env()).unwrap_err();
        let all = e.to_string();
        for want in ["https", "socket_mode", "used by another", "not both"] {
            assert!(all.contains(want), "missing {want}: {all}");
        }
        assert!(e.0.iter().all(|e| e.line.is_some()), "{all}");
    }

    #[test]
    fn bad_values_are_refused() {
        for (text, want) in [
            (
                "[[sandbox]]\nname=\"a\"\nlisten=\"tcp:1\"\n",
                "invalid listen",
            ),
            ("[upstream]\nconnect_timeout=\"3\"\n", "invalid duration"),
            (
                "[[sandbox]]\nname=\"a\"\nlisten=\"unix:/a\"\nendpoints=[\"chat\",\"bogus\"]\n",
                "bogus",
            ),
            (
                "[[sandbox]]\nname=\"a b\"\nlisten=\"unix:/a\"\n",
                "invalid sandbox name",
            ),
            ("", "no [[sandbox]]"),
        ] {
            let e = Config::parse(text, &env()).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn limit_keys_parse_and_their_errors_have_lines() {
        let base = "[[sandbox]]\nname=\"a\"\nlisten=\"unix:/a\"\n";
        let c = Config::parse(
            &format!("{base}max_concurrent=2\nqueue_timeout=\"5s\"\nrequests_per_minute=30\nmax_headers=50\nmax_header_bytes=\"16KiB\"\nmax_connections=64\nkeepalive_timeout=\"10s\"\nrequest_header_timeout=\"2s\"\n"),
            &env(),
        )
        .unwrap();
        let l = c.sandboxes[0].limits;
        assert_eq!(l.queue_timeout, Some(Duration::from_secs(5)));
        assert_eq!(l.requests_per_minute, Some(30));
        assert_eq!((l.max_headers, l.max_header_bytes), (50, 16 << 10));
        assert_eq!(l.max_connections, 64);
        assert_eq!(l.keepalive_timeout, Duration::from_secs(10));
        assert_eq!(l.request_header_timeout, Duration::from_secs(2));
        for (extra, want) in [
            (
                "requests_per_minute=0\n",
                "requests_per_minute must be at least 1",
            ),
            (
                "queue_timeout=\"5s\"\n",
                "queue_timeout applies only with max_concurrent",
            ),
            (
                "max_header_bytes=\"1KiB\"\n",
                "max_header_bytes must be between",
            ),
            ("request_header_timeout=\"1x\"\n", "invalid duration"),
        ] {
            let e = Config::parse(&format!("{base}{extra}"), &env()).unwrap_err();
            assert!(e.to_string().contains(want), "{extra}: {e}");
            assert!(e.0[0].line.is_some(), "{e}");
        }
    }

    #[test]
    fn metrics_listen_is_host_only() {
        let ok = |t: &str| {
            Config::parse(
                &format!(
                    "[metrics]\nlisten = \"{t}\"\n[[sandbox]]\nname=\"a\"\nlisten=\"unix:/a\"\n"
                ),
                &env(),
            )
        };
        assert_eq!(
            ok("127.0.0.1:9464").unwrap().metrics,
            Some(MetricsListen::Tcp("127.0.0.1:9464".parse().unwrap()))
        );
        assert!(ok("[::1]:9464").is_ok());
        assert_eq!(
            ok("unix:/run/m.sock").unwrap().metrics,
            Some(MetricsListen::Unix("/run/m.sock".into()))
        );
        for bad in [
            "0.0.0.0:9464",
            "192.168.1.2:9464",
            "localhost:9464",
            "unix:rel",
        ] {
            let e = ok(bad).unwrap_err();
            assert_eq!(e.0[0].line, Some(2), "{bad}: {e}");
        }
    }

    #[test]
    fn num_ctx_policies() {
        assert_eq!(NumCtxPolicy::Pin(8).apply(Some(2)), Some(8));
        let c = NumCtxPolicy::Clamp {
            min: Some(4),
            max: Some(16),
        };
        assert_eq!(c.apply(None), Some(4));
        assert_eq!(c.apply(Some(2)), Some(4));
        assert_eq!(c.apply(Some(32)), Some(16));
        assert_eq!(c.apply(Some(8)), Some(8));
        let hi = NumCtxPolicy::Clamp {
            min: None,
            max: Some(16),
        };
        assert_eq!(hi.apply(None), None);
    }

    #[test]
    fn builtin_defaults() {
        let c = Config::builtin(&env());
        assert_eq!(
            c.sandboxes[0].listen.to_string(),
            "unix:/run/ollama-bridge/ollama.sock"
        );
        assert_eq!(
            c.audit.path,
            PathBuf::from("/var/log/ollama-bridge/audit.jsonl")
        );
        let user = DefaultsEnv {
            is_root: false,
            xdg_runtime_dir: Some("/run/user/1000".into()),
            home: Some("/home/u".into()),
            uid: 1000,
            ..Default::default()
        };
        assert_eq!(
            user.default_socket(),
            PathBuf::from("/run/user/1000/ollama-bridge/ollama.sock")
        );
        assert_eq!(
            user.default_audit(),
            PathBuf::from("/home/u/.local/state/ollama-bridge/audit.jsonl")
        );
        assert_eq!(
            parse_upstream("http://localhost").unwrap().authority,
            "localhost:80"
        );
        assert!(parse_upstream("http://h:1/x").is_err());
    }
}
