//! Validation of the file as written ([`super::raw`]) into the checked [`Config`]:
//! every error is collected with its line, and single values (upstream URL, socket mode
//! and owner) are parsed here.

use std::collections::HashSet;
use std::time::Duration;

use crate::limits::{Limits, RawLimits};
use crate::listen::ListenAddr;
use crate::model::ModelPattern;
use crate::route::EndpointClass;

use super::raw::RawConfig;
use super::{
    parse_metrics_listen, AuditSettings, Config, ConfigError, ConfigErrors, DefaultsEnv,
    ModelPolicy, NumCtxPolicy, Privileges, Sandbox, SandboxName, Upstream, DEFAULT_MAX_BODY,
    DEFAULT_UPSTREAM, MAX_NUM_CTX,
};

impl Config {
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
                max_body: Some(max_body),
                max_body_buffer: s.max_body_buffer.map(|b| b.0),
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
}

pub(super) fn parse_upstream(url: &str) -> Result<Upstream, String> {
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
