//! Validation of the file as written ([`super::raw`]) into the checked [`Config`]: one
//! validator per section, every error collected with its line. Single values (upstream
//! URL, socket mode and owner) are parsed in [`super::values`].

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use toml::Spanned;

use crate::limits::{Limits, RawLimits};
use crate::listen::ListenAddr;
use crate::model::ModelPattern;
use crate::route::EndpointClass;

use super::found::{Found, Table};
use super::privileges::RawPrivileges;
use super::raw::{CountOrOff, RawAudit, RawMetrics, RawModel, RawSandbox, RawUpstream};
use super::values::{parse_keep_alive, parse_mode, parse_owner, parse_runner_pins, parse_upstream};
use super::{
    parse_metrics_listen, AuditSettings, Config, ConfigErrors, DefaultsEnv, KeepAlivePolicy,
    MetricsListen, ModelPolicy, NumCtxPolicy, Privileges, Sandbox, SandboxName, Upstream,
    DEFAULT_EARLY_HEADERS, DEFAULT_MAX_BODY, DEFAULT_MAX_PARALLEL, DEFAULT_UPSTREAM, MAX_NUM_CTX,
    MAX_PARALLEL_LIMIT,
};

impl Config {
    /// Parses and validates a configuration file's text. Each section has its validator;
    /// they run in this order, so the errors are listed in the same order every time.
    pub fn parse(text: &str, env: &DefaultsEnv) -> Result<Config, ConfigErrors> {
        let mut found = Found::new(text);
        let Some(raw) = found.read_toml() else {
            return Err(found.finish().expect_err("an error was found"));
        };
        let shared = check_upstream(&raw.upstream, &mut found);
        let servers = super::servers::check_servers(&raw.upstream, shared, &mut found);
        let upstream = servers[0].clone();
        let sandboxes = check_sandboxes(&raw.sandbox, &mut found);
        let models = check_models(&raw.model, &mut found);
        let metrics = check_metrics(raw.metrics.as_ref(), &mut found);
        let privileges = check_privileges(&raw.privileges, &mut found);
        let warnings = found.finish()?;
        Ok(Config {
            upstream,
            servers,
            audit: audit_settings(raw.audit, env),
            sandboxes,
            models,
            metrics,
            privileges,
            warnings,
        })
    }
}

/// `[upstream]`: the URL (the default stands in when it is wrong, so the other sections
/// are still checked) and the timeouts, none of them zero.
fn check_upstream(raw: &RawUpstream, found: &mut Found) -> Upstream {
    let url_span = raw.url.as_ref().map(|u| u.span());
    let url = raw
        .url
        .as_ref()
        .map_or(DEFAULT_UPSTREAM, |u| u.get_ref().as_str());
    let upstream = match parse_upstream(url) {
        Ok(u) => u,
        Err(m) => {
            found.push(url_span, format!("[upstream] url: {m}"));
            parse_upstream(DEFAULT_UPSTREAM).expect("default is valid")
        }
    };
    let upstream = Upstream {
        connect_timeout: raw.connect_timeout.map_or(Duration::from_secs(3), |d| d.0),
        header_timeout: raw.header_timeout.map_or(Duration::from_secs(600), |d| d.0),
        idle_timeout: raw.idle_timeout.map_or(Duration::from_secs(120), |d| d.0),
        early_headers: raw
            .early_headers
            .map_or(Some(DEFAULT_EARLY_HEADERS), |d| d.0),
        ..upstream
    };
    let max_parallel = match raw.max_parallel {
        None => Some(DEFAULT_MAX_PARALLEL),
        Some(CountOrOff::Off) => None,
        Some(CountOrOff::Count(n)) => match u32::try_from(n) {
            Ok(n @ 1..=MAX_PARALLEL_LIMIT) => Some(n),
            _ => {
                let m = format!("[upstream] max_parallel must be between 1 and {MAX_PARALLEL_LIMIT} (or \"off\" for no queue); match it to OLLAMA_NUM_PARALLEL times the models loaded at once");
                found.section_err("upstream", "max_parallel", m);
                Some(DEFAULT_MAX_PARALLEL)
            }
        },
    };
    let upstream = Upstream {
        max_parallel,
        ..upstream
    };
    if upstream.early_headers == Some(Duration::ZERO) {
        found.push(
            None,
            "[upstream] early_headers must be greater than zero (or \"off\")".into(),
        );
    }
    for (name, d) in [
        ("connect_timeout", upstream.connect_timeout),
        ("header_timeout", upstream.header_timeout),
        ("idle_timeout", upstream.idle_timeout),
    ] {
        if d.is_zero() {
            let m = format!("[upstream] {name} must be greater than zero");
            found.section_err("upstream", name, m);
        }
    }
    upstream
}

/// `[audit]`: nothing to check; the path defaults by who runs the daemon.
fn audit_settings(raw: RawAudit, env: &DefaultsEnv) -> AuditSettings {
    AuditSettings {
        path: raw.path.unwrap_or_else(|| env.default_audit()),
        log_prompts: raw.log_prompts,
    }
}

/// `[[sandbox]]`: at least one; names and listen addresses unique; each table checked.
fn check_sandboxes(raw: &[Spanned<RawSandbox>], found: &mut Found) -> Vec<Sandbox> {
    let mut sandboxes = Vec::new();
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for spanned in raw {
        let s = spanned.get_ref();
        let mut t = Table {
            found: &mut *found,
            span: spanned.span(),
            ctx: format!("sandbox {:?}", s.name),
        };
        // A wrong name or address is reported and the rest of the table still checked.
        let name = SandboxName::new(&s.name).map_err(|m| t.err(m)).ok();
        let listen = ListenAddr::parse(s.listen.get_ref())
            .map_err(|m| t.err(m))
            .ok();
        if name.as_ref().is_some_and(|n| !names.insert(n.clone())) {
            t.err("the name is used by another [[sandbox]]");
        }
        if let Some(l) = listen.as_ref().filter(|l| !addrs.insert((*l).clone())) {
            t.err(format_args!("listen {l} is used by another [[sandbox]]"));
        }
        let ok = name.is_some() && listen.is_some();
        // Stand-ins, when wrong: the table is checked, not used.
        let name = name.unwrap_or_else(|| SandboxName("_".into()));
        let listen = listen.unwrap_or(ListenAddr::Vsock { port: 0 });
        let sandbox = check_sandbox(name, listen, s, &mut t);
        if ok {
            sandboxes.push(sandbox);
        }
    }
    if raw.is_empty() && !found.dropped_table {
        found.push(
            None,
            "no [[sandbox]] is configured; add at least one listener".into(),
        );
    }
    sandboxes
}

/// One `[[sandbox]]` table whose name and address are already checked.
fn check_sandbox(name: SandboxName, listen: ListenAddr, s: &RawSandbox, t: &mut Table) -> Sandbox {
    let (socket_mode, socket_owner) = check_socket(s, t);
    let models = check_sandbox_models(s.models.as_deref(), t);
    let (max_body, limits) = check_limits(s, t);
    let weight = match s.weight.map(u32::try_from) {
        None => 1,
        Some(Ok(w @ 1..=MAX_PARALLEL_LIMIT)) => w,
        Some(_) => {
            t.err(format_args!(
                "weight must be between 1 and {MAX_PARALLEL_LIMIT} (a sandbox of weight 2 gets twice the share of a busy upstream of one of weight 1)"
            ));
            1
        }
    };
    if s.vsock_cid.is_some() && !matches!(listen, ListenAddr::Vsock { .. }) {
        t.err("vsock_cid applies only to vsock: listeners");
    }
    let unix = matches!(listen, ListenAddr::Unix(_));
    if s.handoff == Some(true) && !unix {
        t.err("handoff applies only to unix: listeners (descriptors cannot cross vsock; the guest relays there)");
    }
    if s.endpoints.as_ref().is_some_and(|e| e.is_empty()) {
        t.warn("endpoints = [] allows no endpoint class, so every request for Ollama is refused (remove the key for the default classes)");
    }
    Sandbox {
        name,
        listen,
        socket_mode,
        socket_owner,
        models,
        endpoints: s.endpoints.clone().map_or_else(
            || EndpointClass::DEFAULT.into_iter().collect(),
            |e| e.into_iter().collect(),
        ),
        openai_via_native: s.openai_via_native,
        max_concurrent: s.max_concurrent,
        weight,
        max_body,
        vsock_cid: s.vsock_cid,
        handoff: unix && s.handoff.unwrap_or(true),
        limits,
        tokens: check_tokens(s, t),
    }
}

/// A sandbox's token budgets: each at least 1 when set; a day budget smaller than the
/// hour's is allowed but surely not meant.
fn check_tokens(s: &RawSandbox, t: &mut Table) -> crate::budget::TokenBudget {
    let mut b = crate::budget::TokenBudget {
        per_hour: s.tokens_per_hour,
        per_day: s.tokens_per_day,
    };
    for (key, v) in [
        ("tokens_per_hour", &mut b.per_hour),
        ("tokens_per_day", &mut b.per_day),
    ] {
        if *v == Some(0) {
            t.err(format_args!(
                "{key} must be at least 1 (leave it out for no token budget)"
            ));
            *v = None;
        }
    }
    if let (Some(h), Some(d)) = (b.per_hour, b.per_day) {
        if d < h {
            t.warn(format_args!("tokens_per_day ({d}) is smaller than tokens_per_hour ({h}): the hour budget can never be reached"));
        }
    }
    b
}

/// A sandbox's `socket_mode` and `socket_owner` (the defaults stand in when wrong).
fn check_socket(s: &RawSandbox, t: &mut Table) -> (u32, Option<(u32, u32)>) {
    let mode = match s.socket_mode.as_deref().map(parse_mode) {
        None => 0o660,
        Some(Ok(m)) => m,
        Some(Err(m)) => {
            t.err(m);
            0o660
        }
    };
    let owner = match s.socket_owner.as_deref().map(parse_owner) {
        None => None,
        Some(Ok(o)) => Some(o),
        Some(Err(m)) => {
            t.err(m);
            None
        }
    };
    (mode, owner)
}

/// A sandbox's `models`: every glob valid, not an empty list (absent means `"*"`).
fn check_sandbox_models(raw: Option<&[String]>, t: &mut Table) -> Vec<ModelPattern> {
    let mut models = Vec::new();
    for m in raw.unwrap_or(&["*".to_owned()]) {
        match ModelPattern::parse(m) {
            Ok(p) => models.push(p),
            Err(e) => t.err(format_args!("models: {e}")),
        }
    }
    if models.is_empty() && raw.is_some_and(|m| m.is_empty()) {
        t.err("models is empty; nothing could be used (write \"*\" for every local model)");
    }
    for m in raw.unwrap_or_default().iter().filter(|m| m.contains("://")) {
        t.warn(format_args!(
            "models: {m:?}: Ollama's model names have no scheme; it is ignored (write the name as `ollama list` shows it)"
        ));
    }
    models
}

/// A sandbox's `max_concurrent`, `max_body` and the other limits ([`RawLimits::check`]);
/// returns `max_body` and the limits (the defaults stand in when wrong).
fn check_limits(s: &RawSandbox, t: &mut Table) -> (u64, Limits) {
    if s.max_concurrent == Some(0) {
        t.err("max_concurrent must be at least 1");
    }
    let max_body = s.max_body.map_or(DEFAULT_MAX_BODY, |b| b.0);
    if max_body == 0 {
        t.err("max_body must be greater than zero");
    }
    let limits = RawLimits {
        max_concurrent: s.max_concurrent,
        queue_timeout: s.queue_timeout.map(|d| d.0),
        requests_per_minute: s.requests_per_minute,
        max_headers: s.max_headers,
        max_header_bytes: s.max_header_bytes.map(|b| b.0),
        max_connections: s.max_connections,
        max_body: Some(max_body),
        max_body_buffer: s.max_body_buffer.map(|b| b.0),
        keepalive_timeout: s.keepalive_timeout.map(|d| d.0),
        request_header_timeout: s.request_header_timeout.map(|d| d.0),
    }
    .check()
    .unwrap_or_else(|ms| {
        for m in ms {
            t.err(m);
        }
        Limits::default()
    });
    (max_body, limits)
}

/// `[model."<glob>"]`: each table checked; the policies sorted most specific first.
fn check_models(raw: &BTreeMap<String, Spanned<RawModel>>, found: &mut Found) -> Vec<ModelPolicy> {
    let mut models = Vec::new();
    for (glob, spanned) in raw {
        let mut t = Table {
            found: &mut *found,
            span: spanned.span(),
            ctx: format!("model {glob:?}"),
        };
        if let Some(m) = check_model(glob, spanned.get_ref(), &mut t) {
            models.push(m);
        }
    }
    models.sort_by_key(|m| std::cmp::Reverse(m.pattern.specificity()));
    models
}

/// One `[model]` table: a valid glob, its num_ctx policy, its pinned runner options and
/// its keep_alive policy. `None` when it cannot be used.
fn check_model(glob: &str, m: &RawModel, t: &mut Table) -> Option<ModelPolicy> {
    let pattern = match ModelPattern::parse(glob) {
        Ok(p) => p,
        Err(e) => {
            t.err(e);
            return None;
        }
    };
    // Each group is checked, so every error is reported.
    let num_ctx = check_num_ctx(m, t);
    let options = check_pins(m, t);
    let keep_alive = check_keep_alive(m, t);
    if m.preload && !pattern.is_literal() {
        t.err(format_args!(
            "preload = true needs an exact model name, and {glob:?} is a glob (or \"*\"): write one [model.\"NAME\"] table with preload per model to keep warm"
        ));
        return None;
    }
    Some(ModelPolicy {
        pattern,
        num_ctx: num_ctx?,
        options: options?,
        keep_alive: keep_alive?,
        tool_salvage: m.tool_salvage,
        preload: m.preload,
    })
}

/// A `[model]` table's pinned runner options ([`parse_runner_pins`]).
fn check_pins(m: &RawModel, t: &mut Table) -> Option<serde_json::Map<String, serde_json::Value>> {
    match m.options.as_ref().map(parse_runner_pins) {
        None => Some(serde_json::Map::new()),
        Some(Ok(pins)) => Some(pins),
        Some(Err(errs)) => {
            for e in errs {
                t.err(e);
            }
            None
        }
    }
}

/// A `[model]` table's `keep_alive` (any value Ollama reads) or `keep_alive_max` (a
/// positive duration), not both. `None` when it cannot be used.
fn check_keep_alive(m: &RawModel, t: &mut Table) -> Option<Option<KeepAlivePolicy>> {
    let read = |key: &str, v: &toml::Value, t: &mut Table| {
        parse_keep_alive(key, v).map_err(|e| t.err(e)).ok()
    };
    match (&m.keep_alive, &m.keep_alive_max) {
        (None, None) => Some(None),
        (Some(_), Some(_)) => {
            t.err("keep_alive pins the value; use it or keep_alive_max, not both");
            None
        }
        (Some(v), None) => read("keep_alive", v, t).map(|k| Some(KeepAlivePolicy::Pin(k))),
        (None, Some(v)) => match read("keep_alive_max", v, t)?.positive() {
            Some(d) => Some(Some(KeepAlivePolicy::Max(d))),
            None => {
                t.err("keep_alive_max must be a positive duration such as \"1h\" (omit it to remove every sandbox keep_alive)");
                None
            }
        },
    }
}

/// A `[model]` table's num_ctx keys: context lengths in range, and either a pinned
/// `num_ctx` or a `num_ctx_min`/`num_ctx_max` clamp. `Some(None)` when it has none,
/// `None` when they cannot be used.
fn check_num_ctx(m: &RawModel, t: &mut Table) -> Option<Option<NumCtxPolicy>> {
    for v in [m.num_ctx, m.num_ctx_min, m.num_ctx_max, m.num_ctx_default]
        .into_iter()
        .flatten()
    {
        if v == 0 || v > MAX_NUM_CTX {
            t.err(format_args!(
                "context lengths must be between 1 and {MAX_NUM_CTX}"
            ));
        }
    }
    let num_ctx = match (m.num_ctx, m.num_ctx_min, m.num_ctx_max, m.num_ctx_default) {
        (None, None, None, None) => return Some(None),
        (Some(n), None, None, None) => NumCtxPolicy::Pin(n),
        (Some(_), _, _, _) => {
            t.err("num_ctx pins the value; use it or num_ctx_min/num_ctx_max/num_ctx_default, not both");
            return None;
        }
        (None, min, max, default) => {
            if let (Some(a), Some(b)) = (min, max) {
                if a > b {
                    t.err(format_args!(
                        "num_ctx_min {a} is greater than num_ctx_max {b}"
                    ));
                }
            }
            if let Some(d) = default {
                if min.is_some_and(|a| d < a) || max.is_some_and(|b| d > b) {
                    t.err(format_args!(
                        "num_ctx_default {d} is outside num_ctx_min..num_ctx_max"
                    ));
                }
            }
            NumCtxPolicy::Clamp { min, max, default }
        }
    };
    Some(Some(num_ctx))
}

/// `[metrics]`: a loopback address or a unix socket.
fn check_metrics(raw: Option<&RawMetrics>, found: &mut Found) -> Option<MetricsListen> {
    let m = raw?;
    match parse_metrics_listen(m.listen.get_ref()) {
        Ok(l) => Some(l),
        Err(msg) => {
            found.push(Some(m.listen.span()), msg);
            None
        }
    }
}

/// `[privileges]`: valid user and group names ([`RawPrivileges::check`]).
fn check_privileges(raw: &RawPrivileges, found: &mut Found) -> Privileges {
    raw.check().unwrap_or_else(|e| {
        for (span, m) in e {
            found.push(Some(span), m);
        }
        Privileges::default()
    })
}
