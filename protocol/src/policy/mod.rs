//! The sandbox policy as a pure function: given a sandbox, a route and the parsed
//! body, either a [`Permit`] naming the canonical models, or a typed [`Denied`].
//! Nothing here does I/O; the host calls [`decide`] before any upstream traffic.

use serde_json::{Map, Value};

use crate::config::{Sandbox, SandboxName};
use crate::error::{BridgeError, Reason};
use crate::json::{canonicalise_key, get_folded};
use crate::model::{ModelName, ModelNameError};
use crate::route::{EndpointClass, ModelFields, Route};

/// What an allowed request may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    pub class: EndpointClass,
    /// The canonical models the request names (empty for listings).
    pub models: Vec<ModelName>,
}

impl Permit {
    /// The model the request is about (the first named).
    pub fn model(&self) -> Option<&ModelName> {
        self.models.first()
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    EndpointNotAllowed {
        class: EndpointClass,
        sandbox: SandboxName,
        allowed: Vec<EndpointClass>,
    },
    ModelNotAllowed {
        model: Box<ModelName>,
        sandbox: SandboxName,
        allowed: Vec<String>,
    },
    CloudModel {
        model: Box<ModelName>,
        sandbox: SandboxName,
    },
    ModelRequired {
        field: &'static str,
    },
    BadModel {
        field: String,
        error: ModelNameError,
    },
    FieldNotString {
        field: String,
    },
    PeerNotAllowed {
        sandbox: SandboxName,
        cid: Option<u32>,
        want: u32,
    },
}

impl Denied {
    /// The canonical model the denial is about, if any.
    pub fn model(&self) -> Option<&ModelName> {
        match self {
            Denied::ModelNotAllowed { model, .. } | Denied::CloudModel { model, .. } => Some(model),
            _ => None,
        }
    }

    /// The answer to send.
    pub fn to_error(&self) -> BridgeError {
        match self {
            Denied::EndpointNotAllowed { class, sandbox, allowed } => BridgeError::new(Reason::EndpointNotAllowed,
                format!(
                    "endpoint class \"{class}\" is not allowed for sandbox \"{sandbox}\" (allowed: {})",
                    join(allowed.iter().map(|c| c.as_str()))
                ),
            ),
            Denied::ModelNotAllowed { model, sandbox, allowed } => BridgeError::new(Reason::ModelNotAllowed,
                format!(
                    "model \"{model}\" is not allowed for sandbox \"{sandbox}\" (allowed: {})",
                    join(allowed.iter().map(String::as_str))
                ),
            ),
            Denied::CloudModel { model, sandbox } => BridgeError::new(Reason::CloudModelNotAllowed,
                format!(
                    "model \"{model}\" is a cloud model (it would send data to ollama.com); cloud models are not allowed for sandbox \"{sandbox}\""
                ),
            ),
            Denied::ModelRequired { field } => BridgeError::new(Reason::ModelRequired,
                format!("model is required (field \"{field}\")"),
            ),
            Denied::BadModel { field, error } => {
                BridgeError::new(Reason::BadModelName, format!("field \"{field}\": {error}"))
            }
            Denied::PeerNotAllowed { sandbox, cid, want } => BridgeError::new(Reason::PeerNotAllowed,
                match cid {
                    Some(c) => format!("peer CID {c} is not allowed for sandbox \"{sandbox}\" (vsock_cid = {want})"),
                    None => format!("peer has no vsock CID; sandbox \"{sandbox}\" admits only CID {want}"),
                },
            ),
            Denied::FieldNotString { field } => BridgeError::new(Reason::BadRequest,
                format!("field \"{field}\" must be a string"),
            ),
        }
    }
}

fn join<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Is the connection's peer the one the sandbox is bound to (`vsock_cid`)?
pub fn peer_allowed(sandbox: &Sandbox, peer: Option<&crate::audit::Peer>) -> Result<(), Denied> {
    let Some(want) = sandbox.vsock_cid else {
        return Ok(());
    };
    let cid = match peer {
        Some(crate::audit::Peer::Vsock { cid }) => Some(*cid),
        _ => None,
    };
    if cid == Some(want) {
        Ok(())
    } else {
        Err(Denied::PeerNotAllowed {
            sandbox: sandbox.name.clone(),
            cid,
            want,
        })
    }
}

/// Is `class` allowed for the sandbox?
pub fn endpoint_allowed(sandbox: &Sandbox, class: EndpointClass) -> Result<(), Denied> {
    if sandbox.endpoints.contains(&class) {
        Ok(())
    } else {
        Err(Denied::EndpointNotAllowed {
            class,
            sandbox: sandbox.name.clone(),
            allowed: sandbox.endpoints.iter().copied().collect(),
        })
    }
}

/// Is the canonical model allowed for the sandbox?
pub fn model_allowed(sandbox: &Sandbox, model: &ModelName) -> Result<(), Denied> {
    if model.is_cloud() && !sandbox.endpoints.contains(&EndpointClass::Cloud) {
        return Err(Denied::CloudModel {
            model: Box::new(model.clone()),
            sandbox: sandbox.name.clone(),
        });
    }
    if sandbox.models.iter().any(|p| p.matches(model)) {
        Ok(())
    } else {
        Err(Denied::ModelNotAllowed {
            model: Box::new(model.clone()),
            sandbox: sandbox.name.clone(),
            allowed: sandbox.models.iter().map(|p| p.to_string()).collect(),
        })
    }
}

/// Decides a request. `body` is the strictly parsed JSON object for routes that have one;
/// the model is read only from the fields Ollama reads for the route
/// ([`Route::model_fields`]), which are renamed to their canonical spelling so what is
/// forwarded is what was decided on. A body that names no model there is refused
/// ([`Denied::ModelRequired`], 400), as Ollama would refuse it.
pub fn decide(
    sandbox: &Sandbox,
    route: &Route,
    body: Option<&mut Map<String, Value>>,
) -> Result<Permit, Denied> {
    let class = route.class();
    endpoint_allowed(sandbox, class)?;
    let mut models = Vec::new();
    if let Route::OaiModel(raw) = route {
        let m = ModelName::parse(raw).map_err(|error| Denied::BadModel {
            field: "path".into(),
            error,
        })?;
        models.push(m);
    }
    match (route.model_fields(), body) {
        (ModelFields::None, _) | (_, None) => {}
        (ModelFields::FirstOf(fields), Some(obj)) => {
            for f in fields {
                canonicalise_key(obj, f);
            }
            let mut chosen = None;
            for f in fields {
                match get_folded(obj, f) {
                    Some((_, Value::String(s))) if !s.is_empty() => {
                        chosen = Some((*f, s.clone()));
                        break;
                    }
                    Some((_, Value::String(_) | Value::Null)) | None => {}
                    Some(_) => {
                        return Err(Denied::FieldNotString {
                            field: (*f).to_owned(),
                        })
                    }
                }
            }
            // No field Ollama reads for this route names a model (a `name` on chat is
            // not one), or the chosen one is blank (Ollama's `ParseRef` trims it to
            // nothing): Ollama would answer 400 `model is required`.
            let (field, raw) = chosen
                .filter(|(_, s)| !s.trim().is_empty())
                .ok_or(Denied::ModelRequired { field: fields[0] })?;
            let m = ModelName::parse(&raw).map_err(|error| Denied::BadModel {
                field: field.to_owned(),
                error,
            })?;
            models.push(m);
        }
        (ModelFields::AllOf(fields), Some(obj)) => {
            for f in fields {
                canonicalise_key(obj, f);
                let raw = match obj.get(*f) {
                    Some(Value::String(s)) if !s.is_empty() => s.clone(),
                    Some(Value::String(_) | Value::Null) | None => {
                        return Err(Denied::ModelRequired { field: f })
                    }
                    Some(_) => {
                        return Err(Denied::FieldNotString {
                            field: (*f).to_owned(),
                        })
                    }
                };
                let m = ModelName::parse(&raw).map_err(|error| Denied::BadModel {
                    field: (*f).to_owned(),
                    error,
                })?;
                models.push(m);
            }
        }
    }
    for m in &models {
        model_allowed(sandbox, m)?;
    }
    Ok(Permit { class, models })
}

mod num_ctx;
mod options;

pub use num_ctx::{apply_num_ctx, read_num_ctx, NumCtx, NumCtxError};
pub use options::{
    apply_keep_alive, apply_load_policy, apply_options, load_request, rewrite_native, LoadRewrite,
    Rewrite,
};

#[cfg(test)]
mod tests;
