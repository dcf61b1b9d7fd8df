//! `[[upstream.server]]`: several Ollama servers instead of one `[upstream] url`. Each
//! server is the shared `[upstream]` settings with its own name, URL, models and the
//! keys it overrides (`max_parallel` and the timeouts).

use std::collections::HashSet;
use std::time::Duration;

use crate::model::ModelPattern;

use super::found::{Found, Table};
use super::raw::{CountOrOff, RawServer, RawUpstream};
use super::values::parse_upstream;
use super::{Upstream, DEFAULT_REFRESH_INTERVAL, MAX_PARALLEL_LIMIT};

/// Every server: `shared` alone (named `default`) with a single `url`, else one per
/// `[[upstream.server]]`. Never empty: a wrong table is reported and left out, and the
/// shared one stands in when none is left.
pub(super) fn check_servers(
    raw: &RawUpstream,
    shared: Upstream,
    found: &mut Found,
) -> Vec<Upstream> {
    let refresh_interval = raw
        .refresh_interval
        .map_or(DEFAULT_REFRESH_INTERVAL, |d| d.0);
    if refresh_interval.is_zero() {
        let m = "[upstream] refresh_interval must be greater than zero".to_owned();
        found.section_err("upstream", "refresh_interval", m);
    }
    let shared = Upstream {
        refresh_interval,
        ..shared
    };
    if raw.server.is_empty() {
        return vec![shared];
    }
    if let Some(url) = &raw.url {
        found.push(
            Some(url.span()),
            "[upstream] url and [[upstream.server]] are both set: choose one (url for a single Ollama server, [[upstream.server]] entries with name and url for several)".into(),
        );
    }
    let mut names = HashSet::new();
    let mut bases = HashSet::new();
    let mut servers = Vec::new();
    for spanned in &raw.server {
        let s = spanned.get_ref();
        let mut t = Table {
            found: &mut *found,
            span: spanned.span(),
            ctx: format!("[[upstream.server]] {:?}", s.name),
        };
        let mut ok = true;
        if let Err(m) = check_name(&s.name) {
            t.err(m);
            ok = false;
        } else if !names.insert(s.name.clone()) {
            t.err("the name is used by another [[upstream.server]]");
            ok = false;
        }
        let server = match parse_upstream(&s.url) {
            Ok(u) => Some(u),
            Err(m) => {
                t.err(format_args!("url: {m}"));
                None
            }
        };
        if let Some(u) = server.as_ref().filter(|u| !bases.insert(u.base.clone())) {
            t.err(format_args!(
                "url {} is used by another [[upstream.server]]",
                u.base
            ));
        }
        let models = check_models(s.models.as_deref(), &mut t);
        let server = server.map(|u| Upstream {
            name: s.name.clone(),
            models,
            base: u.base,
            authority: u.authority,
            ..overrides(s, &shared, &mut t)
        });
        if let Some(server) = server.filter(|_| ok) {
            servers.push(server);
        }
    }
    if servers.is_empty() {
        servers.push(shared);
    }
    servers
}

/// A server name: like a sandbox's, `[A-Za-z0-9_.-]{1,64}`.
fn check_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid server name {s:?}: use 1-64 of A-Z a-z 0-9 _ - ."
        ))
    }
}

/// The models routed to a server: valid globs, not an empty list (absent: any).
fn check_models(raw: Option<&[String]>, t: &mut Table) -> Vec<ModelPattern> {
    let Some(raw) = raw else {
        return Vec::new();
    };
    if raw.is_empty() {
        t.err("models is empty; no model could be routed here (leave it out for every model the server has)");
    }
    raw.iter()
        .filter_map(|m| {
            ModelPattern::parse(m)
                .map_err(|e| t.err(format_args!("models: {e}")))
                .ok()
        })
        .collect()
}

/// The shared settings with the keys a server overrides.
fn overrides(s: &RawServer, shared: &Upstream, t: &mut Table) -> Upstream {
    let pick = |own: Option<crate::units::HumanDuration>, d: Duration| own.map_or(d, |o| o.0);
    let up = Upstream {
        connect_timeout: pick(s.connect_timeout, shared.connect_timeout),
        header_timeout: pick(s.header_timeout, shared.header_timeout),
        idle_timeout: pick(s.idle_timeout, shared.idle_timeout),
        max_parallel: match s.max_parallel {
            None => shared.max_parallel,
            Some(CountOrOff::Off) => None,
            Some(CountOrOff::Count(n)) => match u32::try_from(n) {
                Ok(n @ 1..=MAX_PARALLEL_LIMIT) => Some(n),
                _ => {
                    t.err(format_args!("max_parallel must be between 1 and {MAX_PARALLEL_LIMIT} (or \"off\" for no queue)"));
                    shared.max_parallel
                }
            },
        },
        ..shared.clone()
    };
    for (name, d) in [
        ("connect_timeout", up.connect_timeout),
        ("header_timeout", up.header_timeout),
        ("idle_timeout", up.idle_timeout),
    ] {
        if d.is_zero() {
            t.err(format_args!("{name} must be greater than zero"));
        }
    }
    up
}
