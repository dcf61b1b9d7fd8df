//! Single values of the configuration, parsed from their strings: the upstream URL, a
//! socket's mode and its owner, a model's keep_alive and pinned runner options. Used by
//! [`super::validate`] and by the built-in defaults.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::ollama_opts::{
    is_sampling_option, runner_option, KeepAlive, OptionType, RUNNER_OPTIONS,
};

use super::Upstream;

/// `[upstream] url`: `http://HOST[:PORT]` (port 80 when absent); the timeouts are left
/// zero for the caller to fill in.
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
        name: super::DEFAULT_SERVER_NAME.to_owned(),
        models: Vec::new(),
        refresh_interval: super::DEFAULT_REFRESH_INTERVAL,
        base: format!("http://{authority}"),
        authority,
        connect_timeout: Duration::ZERO,
        header_timeout: Duration::ZERO,
        idle_timeout: Duration::ZERO,
        early_headers: None,
        max_parallel: None,
    })
}

/// `socket_mode`: octal permission bits, `"0660"` or `"0o660"`.
pub(super) fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!(
            "socket_mode {s:?}: expected octal permission bits such as \"0660\""
        )),
    }
}

/// `socket_owner`: numeric `"uid:gid"`.
pub(super) fn parse_owner(s: &str) -> Result<(u32, u32), String> {
    s.split_once(':')
        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
        .ok_or_else(|| {
            format!("socket_owner {s:?}: expected numeric \"uid:gid\", e.g. \"1000:1000\"")
        })
}

/// `keep_alive` / `keep_alive_max`: read as Ollama reads a request's keep_alive (a Go
/// duration string such as `"30m"`, or a number of seconds; negative = forever).
pub(super) fn parse_keep_alive(key: &str, v: &toml::Value) -> Result<KeepAlive, String> {
    let read = match v {
        toml::Value::String(s) => KeepAlive::parse(s).map_err(|e| e.to_string()),
        toml::Value::Integer(n) => Ok(KeepAlive::from_seconds(*n as f64)),
        toml::Value::Float(f) if f.is_finite() => Ok(KeepAlive::from_seconds(*f)),
        _ => Err("expected a duration such as \"30m\" or a number of seconds".into()),
    };
    read.map_err(|m| format!("{key}: {m}"))
}

/// `options = { ... }`: runner options only (sampling options are each request's own,
/// num_ctx has its own keys), each of the type Ollama reads. Returns the pins as JSON
/// values, or every error found.
pub(super) fn parse_runner_pins(t: &toml::Table) -> Result<Map<String, Value>, Vec<String>> {
    let pinnable = || {
        RUNNER_OPTIONS
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| *k != "num_ctx")
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut pins = Map::new();
    let mut errs = Vec::new();
    for (k, v) in t {
        let kind = match runner_option(k) {
            Some(_) if k == "num_ctx" => {
                errs.push("options.num_ctx: use the num_ctx key (or num_ctx_min/num_ctx_max) of this table".into());
                continue;
            }
            Some(kind) => kind,
            None if is_sampling_option(k) => {
                errs.push(format!("options.{k} is a sampling option, which each request chooses; only runner options can be pinned: {}", pinnable()));
                continue;
            }
            None => {
                errs.push(format!(
                    "options.{k} is not an Ollama runner option (pinnable: {})",
                    pinnable()
                ));
                continue;
            }
        };
        let min = match k.as_str() {
            "num_batch" => 1,
            "num_gpu" => -1,
            _ => 0,
        };
        match (kind, v) {
            (OptionType::Boolean, toml::Value::Boolean(b)) => {
                pins.insert(k.clone(), Value::Bool(*b));
            }
            (OptionType::Integer, toml::Value::Integer(n)) if *n >= min => {
                pins.insert(k.clone(), Value::from(*n));
            }
            (OptionType::Integer, toml::Value::Integer(n)) => {
                errs.push(format!("options.{k} must be at least {min}, not {n}"));
            }
            (OptionType::Integer, _) => errs.push(format!("options.{k} must be an integer")),
            (OptionType::Boolean, _) => errs.push(format!("options.{k} must be true or false")),
        }
    }
    if errs.is_empty() {
        Ok(pins)
    } else {
        Err(errs)
    }
}
