//! A request's `options` and `keep_alive` under the model's policy. Runner (load-time)
//! options and `keep_alive` decide how a model is loaded and how long it stays, for every
//! sandbox that shares it; so they are the operator's:
//!
//! - `options`: sampling options pass ([`crate::ollama_opts::SAMPLING_OPTIONS`]); num_ctx
//!   keeps its own policy ([`super::apply_num_ctx`]); every other key (runner options,
//!   and unknown keys, so a runner option added by a later Ollama cannot slip through)
//!   is removed. The model's pinned runner options are then inserted.
//! - `keep_alive`: a pinned value replaces the sandbox's; with `keep_alive_max`, a
//!   positive keep_alive passes, capped; in every other case (no policy, zero, forever,
//!   unreadable) it is removed and Ollama's own default applies.
//!
//! Top-level keys are matched as Go matches them (`"OPTIONS"` is `options`); option keys
//! exactly, as `Options.FromMap` reads its map.

use serde_json::{Map, Value};

use crate::audit::AuditRecord;
use crate::config::{Config, KeepAlivePolicy, LoadPolicy};
use crate::json::canonicalise_key;
use crate::model::ModelName;
use crate::ollama_opts::{is_sampling_option, KeepAlive};

use super::num_ctx::{apply_num_ctx, NumCtx, NumCtxError};

/// Longest piece of a sandbox's keep_alive kept in the audit record.
const REQUESTED_MAX: usize = 64;

/// What the load policy did to a request, for its audit record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadRewrite {
    /// Keys removed from `options`, in the request's order.
    pub options_removed: Vec<String>,
    /// The sandbox's keep_alive as it came (a string as written, else its JSON text; cut
    /// at 64 bytes), when it sent one.
    pub keep_alive_requested: Option<String>,
    /// The keep_alive sent to Ollama (`-1` for forever), when one was sent.
    pub keep_alive_sent: Option<String>,
}

/// Everything the model's policy did to a native request's body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    pub num_ctx: NumCtx,
    pub load: LoadRewrite,
}

impl Rewrite {
    /// Writes the facts into the request's audit record.
    pub fn record(self, rec: &mut AuditRecord) {
        rec.num_ctx_requested = self.num_ctx.requested;
        rec.num_ctx_sent = self.num_ctx.sent;
        rec.options_removed = self.load.options_removed;
        rec.keep_alive_requested = self.load.keep_alive_requested;
        rec.keep_alive_sent = self.load.keep_alive_sent;
    }
}

/// Applies the model's whole policy to a native request body (`/api/chat`,
/// `/api/generate`, `/api/embed`, `/api/embeddings`, or one translated from OpenAI):
/// num_ctx first (its refusals are the only ones), then options, then keep_alive.
pub fn rewrite_native(
    obj: &mut Map<String, Value>,
    config: &Config,
    model: &ModelName,
) -> Result<Rewrite, NumCtxError> {
    let num_ctx = apply_num_ctx(obj, config.num_ctx_policy(model))?;
    let load = apply_load_policy(obj, &config.load_policy(model));
    Ok(Rewrite { num_ctx, load })
}

/// The body of the request that asks Ollama to load `model` (`preload = true`): an
/// `/api/generate` with no prompt, carrying exactly what a request for the model carries
/// after [`rewrite_native`] (num_ctx, pinned options, keep_alive), so the first real
/// request finds the model loaded as it needs it and does not reload it.
pub fn load_request(config: &Config, model: &ModelName) -> Result<Map<String, Value>, NumCtxError> {
    let mut obj = Map::new();
    obj.insert("model".into(), Value::String(model.to_string()));
    rewrite_native(&mut obj, config, model)?;
    Ok(obj)
}

/// Removes the runner and unknown options, inserts the pinned ones, and decides
/// keep_alive.
pub fn apply_load_policy(obj: &mut Map<String, Value>, policy: &LoadPolicy) -> LoadRewrite {
    let options_removed = apply_options(obj, &policy.options);
    let (keep_alive_requested, keep_alive_sent) = apply_keep_alive(obj, policy.keep_alive);
    LoadRewrite {
        options_removed,
        keep_alive_requested,
        keep_alive_sent,
    }
}

/// Keeps the sampling options and `num_ctx` of `options`, removes every other key, then
/// inserts `pins`. Returns the removed keys. An `options` that is not an object (Ollama
/// refuses it) is left alone, unless there are pins: then it becomes an object holding
/// them.
pub fn apply_options(obj: &mut Map<String, Value>, pins: &Map<String, Value>) -> Vec<String> {
    canonicalise_key(obj, "options");
    let mut removed = Vec::new();
    if let Some(Value::Object(opts)) = obj.get_mut("options") {
        opts.retain(|k, _| {
            let keep = k == "num_ctx" || is_sampling_option(k);
            if !keep {
                removed.push(k.clone());
            }
            keep
        });
    }
    if pins.is_empty() {
        return removed;
    }
    let opts = obj
        .entry("options")
        .and_modify(|v| {
            if !v.is_object() {
                *v = Value::Object(Map::new());
            }
        })
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(o) = opts {
        for (k, v) in pins {
            o.insert(k.clone(), v.clone());
        }
    }
    removed
}

/// Decides `keep_alive`: returns what the sandbox asked (as recorded) and what is sent.
pub fn apply_keep_alive(
    obj: &mut Map<String, Value>,
    policy: Option<KeepAlivePolicy>,
) -> (Option<String>, Option<String>) {
    canonicalise_key(obj, "keep_alive");
    // `null` is no keep_alive to Go (a nil pointer).
    let asked = obj.shift_remove("keep_alive").filter(|v| !v.is_null());
    let requested = asked.as_ref().map(describe);
    let sent = match policy {
        Some(KeepAlivePolicy::Pin(k)) => Some(k),
        Some(KeepAlivePolicy::Max(max)) => asked
            .as_ref()
            .and_then(|v| KeepAlive::from_json(v).ok().flatten())
            .and_then(KeepAlive::positive)
            .map(|d| KeepAlive::For(d.min(max))),
        None => None,
    };
    let sent = sent.map(|k| {
        obj.insert("keep_alive".into(), k.to_json());
        k.to_string()
    });
    (requested, sent)
}

/// A sandbox's keep_alive for the audit record: a string as written, anything else as
/// its JSON text, at most [`REQUESTED_MAX`] bytes.
fn describe(v: &Value) -> String {
    let mut s = match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    if s.len() > REQUESTED_MAX {
        let mut end = REQUESTED_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
#[path = "options_tests.rs"]
mod tests;
