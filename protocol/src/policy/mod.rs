//! The sandbox policy as a pure function: given a sandbox, a route and the parsed
//! body, either a [`Permit`] naming the canonical models, or a typed [`Denied`].
//! Nothing here does I/O; the host calls [`decide`] before any upstream traffic.

use serde_json::{Map, Value};

use crate::config::{NumCtxPolicy, Sandbox, SandboxName};
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
            Denied::EndpointNotAllowed { class, sandbox, allowed } => BridgeError::new(
                403,
                Reason::EndpointNotAllowed,
                format!(
                    "endpoint class \"{class}\" is not allowed for sandbox \"{sandbox}\" (allowed: {})",
                    join(allowed.iter().map(|c| c.as_str()))
                ),
            ),
            Denied::ModelNotAllowed { model, sandbox, allowed } => BridgeError::new(
                403,
                Reason::ModelNotAllowed,
                format!(
                    "model \"{model}\" is not allowed for sandbox \"{sandbox}\" (allowed: {})",
                    join(allowed.iter().map(String::as_str))
                ),
            ),
            Denied::CloudModel { model, sandbox } => BridgeError::new(
                403,
                Reason::CloudModelNotAllowed,
                format!(
                    "model \"{model}\" is a cloud model (it would send data to ollama.com); cloud models are not allowed for sandbox \"{sandbox}\""
                ),
            ),
            Denied::ModelRequired { field } => BridgeError::new(
                400,
                Reason::ModelRequired,
                format!("model is required (field \"{field}\")"),
            ),
            Denied::BadModel { field, error } => {
                BridgeError::new(400, Reason::BadModelName, format!("field \"{field}\": {error}"))
            }
            Denied::PeerNotAllowed { sandbox, cid, want } => BridgeError::new(
                403,
                Reason::PeerNotAllowed,
                match cid {
                    Some(c) => format!("peer CID {c} is not allowed for sandbox \"{sandbox}\" (vsock_cid = {want})"),
                    None => format!("peer has no vsock CID; sandbox \"{sandbox}\" admits only CID {want}"),
                },
            ),
            Denied::FieldNotString { field } => BridgeError::new(
                400,
                Reason::BadRequest,
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
/// model fields are renamed to their canonical spelling so what is forwarded is what
/// was decided on.
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
            let (field, raw) = chosen.ok_or(Denied::ModelRequired { field: fields[0] })?;
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

/// The num_ctx asked for and the num_ctx sent, after the model's policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NumCtx {
    pub requested: Option<u64>,
    pub sent: Option<u64>,
}

/// Applies a context policy to a native request body's `options.num_ctx`.
/// A requested value that is not a non-negative integer is left for Ollama to refuse
/// only when there is no policy; with a policy it is replaced.
pub fn apply_num_ctx(obj: &mut Map<String, Value>, policy: Option<NumCtxPolicy>) -> NumCtx {
    canonicalise_key(obj, "options");
    let requested = match obj.get_mut("options") {
        Some(Value::Object(opts)) => {
            canonicalise_key(opts, "num_ctx");
            opts.get("num_ctx").and_then(Value::as_u64)
        }
        _ => None,
    };
    let Some(policy) = policy else {
        return NumCtx {
            requested,
            sent: requested,
        };
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
            o.insert("num_ctx".into(), Value::from(n));
        }
    }
    NumCtx { requested, sent }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, DefaultsEnv};
    use crate::json::parse_strict_object;

    fn sandbox(models: &str, endpoints: &str) -> Sandbox {
        let text = format!(
            "[[sandbox]]\nname = \"automation\"\nlisten = \"unix:/x.sock\"\nmodels = {models}\nendpoints = {endpoints}\n"
        );
        Config::parse(&text, &DefaultsEnv::default())
            .unwrap()
            .sandboxes
            .remove(0)
    }

    fn run(s: &Sandbox, method: &str, path: &str, body: &str) -> Result<Permit, Denied> {
        let route = Route::classify(method, path, None).unwrap();
        let mut obj = (!body.is_empty()).then(|| parse_strict_object(body.as_bytes()).unwrap());
        decide(s, &route, obj.as_mut())
    }

    #[test]
    fn table_of_decisions() {
        let s = sandbox(
            r#"["qwen2.5:latest", "llama3.2:*"]"#,
            r#"["chat", "generate", "embed", "list", "openai"]"#,
        );
        type Want = Result<&'static str, Reason>;
        let cases: &[(&str, &str, &str, Want)] = &[
            (
                "POST",
                "/api/chat",
                r#"{"model":"qwen2.5"}"#,
                Ok("qwen2.5:latest"),
            ),
            (
                "POST",
                "/api/chat",
                r#"{"model":"registry.ollama.ai/library/qwen2.5:latest"}"#,
                Ok("qwen2.5:latest"),
            ),
            (
                "POST",
                "/api/chat",
                r#"{"model":"QWEN2.5:LATEST"}"#,
                Ok("qwen2.5:latest"),
            ),
            (
                "POST",
                "/api/chat",
                r#"{"model":"llama3.2:3b"}"#,
                Ok("llama3.2:3b"),
            ),
            (
                "POST",
                "/api/chat",
                r#"{"model":"llama3.3:70b"}"#,
                Err(Reason::ModelNotAllowed),
            ),
            (
                "POST",
                "/api/chat",
                r#"{"name":"llama3.3:70b"}"#,
                Err(Reason::ModelNotAllowed),
            ),
            (
                "POST",
                "/api/chat",
                r#"{"name":"qwen2.5"}"#,
                Ok("qwen2.5:latest"),
            ),
            (
                "POST",
                "/api/chat",
                r#"{"model":"qwen2.5","name":"llama3.3:70b"}"#,
                Ok("qwen2.5:latest"),
            ),
            (
                "POST",
                "/api/chat",
                r#"{"model":"","name":"llama3.3:70b"}"#,
                Err(Reason::ModelNotAllowed),
            ),
            (
                "POST",
                "/api/chat",
                r#"{"Model":"llama3.3:70b"}"#,
                Err(Reason::ModelNotAllowed),
            ),
            ("POST", "/api/chat", "{\"mod\u{212a}el\":\"x\"}", Ok("x")), // not a fold of model: no model → required
            (
                "POST",
                "/api/chat",
                r#"{"messages":[]}"#,
                Err(Reason::ModelRequired),
            ),
            (
                "POST",
                "/api/chat",
                r#"{"model":7}"#,
                Err(Reason::BadRequest),
            ),
            (
                "POST",
                "/api/chat",
                r#"{"model":"a/b/c/d"}"#,
                Err(Reason::BadModelName),
            ),
            (
                "POST",
                "/api/chat",
                r#"{"model":"llama3.2:1b-cloud"}"#,
                Err(Reason::CloudModelNotAllowed),
            ),
            (
                "POST",
                "/api/embed",
                r#"{"model":"qwen2.5"}"#,
                Ok("qwen2.5:latest"),
            ),
            (
                "POST",
                "/api/show",
                r#"{"name":"llama3.3:70b"}"#,
                Err(Reason::ModelNotAllowed),
            ),
            (
                "GET",
                "/v1/models/llama3.3:70b",
                "",
                Err(Reason::ModelNotAllowed),
            ),
            ("GET", "/v1/models/qwen2.5", "", Ok("qwen2.5:latest")),
            (
                "POST",
                "/v1/chat/completions",
                r#"{"model":"qwen2.5","name":"x"}"#,
                Ok("qwen2.5:latest"),
            ),
            (
                "POST",
                "/api/pull",
                r#"{"model":"qwen2.5"}"#,
                Err(Reason::EndpointNotAllowed),
            ),
            (
                "POST",
                "/api/copy",
                r#"{"source":"qwen2.5","destination":"x"}"#,
                Err(Reason::EndpointNotAllowed),
            ),
            (
                "DELETE",
                "/api/delete",
                r#"{"model":"qwen2.5"}"#,
                Err(Reason::EndpointNotAllowed),
            ),
            (
                "POST",
                "/v1/responses",
                r#"{"model":"qwen2.5"}"#,
                Err(Reason::EndpointNotAllowed),
            ),
            (
                "POST",
                "/v1/messages",
                r#"{"model":"qwen2.5"}"#,
                Err(Reason::EndpointNotAllowed),
            ),
            ("GET", "/api/tags", "", Ok("")),
        ];
        for (m, p, b, want) in cases {
            let got = run(&s, m, p, b);
            match (want, &got) {
                (Ok(""), Ok(permit)) => assert!(permit.models.is_empty(), "{p} {b}"),
                (Ok(name), Ok(permit)) if *name != "x" => {
                    assert_eq!(permit.model().unwrap().to_string(), *name, "{p} {b}")
                }
                (Ok(_), Err(Denied::ModelRequired { .. })) => {}
                (Err(r), Err(d)) => assert_eq!(d.to_error().reason, *r, "{p} {b}: {d:?}"),
                _ => panic!("{m} {p} {b}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn vsock_cid_binds_a_sandbox_to_one_vm() {
        use crate::audit::Peer;
        let text = "[[sandbox]]\nname = \"vm\"\nlisten = \"vsock:11434\"\nvsock_cid = 3\n";
        let s = Config::parse(text, &DefaultsEnv::default())
            .unwrap()
            .sandboxes
            .remove(0);
        assert!(peer_allowed(&s, Some(&Peer::Vsock { cid: 3 })).is_ok());
        let e = peer_allowed(&s, Some(&Peer::Vsock { cid: 4 }))
            .unwrap_err()
            .to_error();
        assert_eq!((e.status, e.reason), (403, Reason::PeerNotAllowed));
        assert!(
            e.message
                .contains("peer CID 4 is not allowed for sandbox \"vm\""),
            "{}",
            e.message
        );
        let unix = Peer::Unix {
            uid: 0,
            gid: 0,
            pid: None,
        };
        assert!(peer_allowed(&s, Some(&unix)).is_err());
        let open = sandbox(r#"["*"]"#, r#"["chat"]"#);
        assert!(peer_allowed(&open, Some(&Peer::Vsock { cid: 9 })).is_ok());
    }

    #[test]
    fn copy_checks_both_names() {
        let s = sandbox(r#"["qwen2.5:*"]"#, r#"["manage"]"#);
        assert!(run(
            &s,
            "POST",
            "/api/copy",
            r#"{"source":"qwen2.5","destination":"qwen2.5:mine"}"#
        )
        .is_ok());
        let d = run(
            &s,
            "POST",
            "/api/copy",
            r#"{"source":"qwen2.5","destination":"evil:1"}"#,
        )
        .unwrap_err();
        assert_eq!(d.to_error().reason, Reason::ModelNotAllowed);
        let d = run(&s, "POST", "/api/copy", r#"{"source":"qwen2.5"}"#).unwrap_err();
        assert_eq!(d.to_error().reason, Reason::ModelRequired);
    }

    #[test]
    fn cloud_needs_the_cloud_class() {
        let s = sandbox(r#"["*"]"#, r#"["chat", "cloud"]"#);
        assert!(run(&s, "POST", "/api/chat", r#"{"model":"gpt-oss:120b-cloud"}"#).is_ok());
        let s = sandbox(r#"["*"]"#, r#"["chat"]"#);
        assert!(run(&s, "POST", "/api/chat", r#"{"model":"gpt-oss:120b-cloud"}"#).is_err());
    }

    #[test]
    fn denial_message_says_who_and_what() {
        let s = sandbox(r#"["qwen2.5:7b", "llama3.2:3b"]"#, r#"["chat"]"#);
        let e = run(&s, "POST", "/api/chat", r#"{"model":"llama3.3:70b"}"#)
            .unwrap_err()
            .to_error();
        assert_eq!(e.status, 403);
        assert_eq!(
            e.full_message(),
            "ollama-bridge: model \"llama3.3:70b\" is not allowed for sandbox \"automation\" (allowed: qwen2.5:7b, llama3.2:3b)"
        );
    }

    #[test]
    fn num_ctx_rewrite() {
        let mut o =
            parse_strict_object(br#"{"model":"m","options":{"NUM_CTX":2048,"temperature":0}}"#)
                .unwrap();
        let n = apply_num_ctx(&mut o, Some(NumCtxPolicy::Pin(32768)));
        assert_eq!(
            n,
            NumCtx {
                requested: Some(2048),
                sent: Some(32768)
            }
        );
        assert_eq!(o["options"]["num_ctx"], 32768);
        assert!(o["options"].get("NUM_CTX").is_none());
        assert_eq!(o["options"]["temperature"], 0);
        let mut o = parse_strict_object(br#"{"model":"m"}"#).unwrap();
        let n = apply_num_ctx(
            &mut o,
            Some(NumCtxPolicy::Clamp {
                min: Some(8192),
                max: None,
            }),
        );
        assert_eq!(n.sent, Some(8192));
        assert_eq!(o["options"]["num_ctx"], 8192);
        let mut o = parse_strict_object(br#"{"model":"m","options":{"num_ctx":100}}"#).unwrap();
        assert_eq!(
            apply_num_ctx(&mut o, None),
            NumCtx {
                requested: Some(100),
                sent: Some(100)
            }
        );
    }
}
