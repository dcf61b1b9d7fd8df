//! `options.num_ctx`, read exactly as Ollama reads it, then pinned or clamped by the
//! model's policy so that the context Ollama runs with always lies within the operator's
//! bounds.
//!
//! Ollama (`api/types.go`, `Options.FromMap`) takes a request's `options` as a map and
//! reads each key exactly (no case folding: `NUM_CTX` is not an option). For an integer
//! option, `null` is skipped (Ollama's default applies), a JSON number becomes an
//! `int64` (a float is truncated: `1e6` is 1000000, `65536.9` is 65536), and anything
//! else is refused ("option must be of type integer"). The bridge refuses what Ollama
//! refuses, and a context length of zero or less, with 400.

use serde_json::{Map, Value};
use thiserror::Error;

use crate::config::NumCtxPolicy;
use crate::error::{BridgeError, Reason};
use crate::json::canonicalise_key;

/// The num_ctx asked for (as Ollama would read it, saturated to the integer range) and
/// the num_ctx sent, after the model's policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NumCtx {
    pub requested: Option<u64>,
    pub sent: Option<u64>,
}

/// A `num_ctx` that is no context length.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NumCtxError {
    #[error("options.num_ctx must be an integer (Ollama refuses {0})")]
    NotANumber(&'static str),
    #[error("options.num_ctx must be at least 1, not {0}")]
    NotPositive(String),
}

impl NumCtxError {
    /// The 400 answer.
    pub fn to_error(&self) -> BridgeError {
        BridgeError::new(Reason::BadRequest, self.to_string())
    }
}

/// The `num_ctx` Ollama would run with for this `options.num_ctx` value: `None` for
/// `null`; numbers truncated toward zero and saturated to `i64::MAX`.
pub fn read_num_ctx(v: &Value) -> Result<Option<u64>, NumCtxError> {
    let n = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => n,
        Value::Bool(_) => return Err(NumCtxError::NotANumber("a boolean")),
        Value::String(_) => return Err(NumCtxError::NotANumber("a string")),
        Value::Array(_) => return Err(NumCtxError::NotANumber("an array")),
        Value::Object(_) => return Err(NumCtxError::NotANumber("an object")),
    };
    if let Some(u) = n.as_u64() {
        return match u {
            0 => Err(NumCtxError::NotPositive("0".into())),
            u => Ok(Some(u.min(i64::MAX as u64))),
        };
    }
    if n.as_i64().is_some() {
        return Err(NumCtxError::NotPositive(n.to_string()));
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    let t = f.trunc();
    if t.is_nan() || t < 1.0 {
        return Err(NumCtxError::NotPositive(n.to_string()));
    }
    // `as` saturates: 1e23 is i64::MAX, as the audit records it.
    Ok(Some((t as i64) as u64))
}

/// Reads a native request's `options.num_ctx` and applies the model's policy: pinned, or
/// clamped into its bounds, or (asked for nothing) its default, else its floor, else its
/// cap. The value sent is always a plain integer. With a policy, `options` that is not
/// an object is replaced (Ollama would refuse it) and case variants of `num_ctx` (which
/// Ollama does not read) are removed.
pub fn apply_num_ctx(
    obj: &mut Map<String, Value>,
    policy: Option<NumCtxPolicy>,
) -> Result<NumCtx, NumCtxError> {
    canonicalise_key(obj, "options");
    let requested = match obj.get("options") {
        Some(Value::Object(opts)) => match opts.get("num_ctx") {
            Some(v) => read_num_ctx(v)?,
            None => None,
        },
        _ => None,
    };
    let Some(policy) = policy else {
        return Ok(NumCtx {
            requested,
            sent: requested,
        });
    };
    let sent = policy.apply(requested);
    if let Some(n) = sent {
        let opts = obj
            .entry("options")
            .and_modify(|v| {
                if !v.is_object() {
                    *v = Value::Object(Map::new());
                }
            })
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(o) = opts {
            o.retain(|k, _| k == "num_ctx" || !k.eq_ignore_ascii_case("num_ctx"));
            o.insert("num_ctx".into(), Value::from(n));
        }
    }
    Ok(NumCtx { requested, sent })
}
