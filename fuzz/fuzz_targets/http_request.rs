//! A raw HTTP/1.1 request (head + body) through what bridge-host does with it before
//! anything goes upstream: the head parsed as hyper parses it (httparse, then
//! `http::Method` and `http::Uri`), `Route::classify` on `uri.path()` / `uri.query()`,
//! then for JSON routes the strict body parser, `policy::decide` and `rewrite_native`.
//!
//! Properties: nothing panics; classification is deterministic; an accepted request has
//! no query, a canonical path (no `%`, `\`, dot or empty segments, control or non-ASCII
//! bytes) that is exactly a route of the README's endpoint table, and a raw target that is that
//! path (origin form) or `scheme://authority` + that path; the route's class matches the
//! table; a permitted body, re-serialised as the host forwards it, names to Ollama's Go
//! decoder exactly the models that were decided on (read only from the fields Ollama's
//! request type for the route has: no `name` on chat, generate or embed), and carries the
//! num_ctx decided; a body refused for naming no model names none to Ollama either; its
//! `options` hold no runner option but num_ctx and the model's pinned ones (with their
//! pinned values) and no unknown key, and its `keep_alive` is the pinned one, or absent,
//! or (with `keep_alive_max`) a positive duration within the cap.
#![no_main]

use fuzz_support::{config, ollama_models, sandboxes};
use libfuzzer_sys::fuzz_target;
use protocol::config::{KeepAlivePolicy, LoadPolicy, NumCtxPolicy};
use protocol::json::parse_strict_object;
use protocol::ollama_opts::{is_sampling_option, KeepAlive};
use protocol::policy::{decide, endpoint_allowed, read_num_ctx, rewrite_native, Denied};
use protocol::route::{is_canonical_path, BodyKind, EndpointClass, Route};
use protocol::ModelName;
use serde_json::Value;

/// The README's endpoint table, written independently of `Route::classify`:
/// exact paths with their methods and class.
const TABLE: &[(&str, &[&str], EndpointClass)] = &[
    ("/", &["GET", "HEAD"], EndpointClass::List),
    ("/api/version", &["GET", "HEAD"], EndpointClass::List),
    ("/api/tags", &["GET", "HEAD"], EndpointClass::List),
    ("/api/ps", &["GET"], EndpointClass::List),
    ("/api/show", &["POST"], EndpointClass::List),
    ("/api/chat", &["POST"], EndpointClass::Chat),
    ("/api/generate", &["POST"], EndpointClass::Generate),
    ("/api/embed", &["POST"], EndpointClass::Embed),
    ("/api/embeddings", &["POST"], EndpointClass::Embed),
    ("/v1/chat/completions", &["POST"], EndpointClass::Openai),
    ("/v1/completions", &["POST"], EndpointClass::Openai),
    ("/v1/embeddings", &["POST"], EndpointClass::Openai),
    ("/v1/models", &["GET"], EndpointClass::Openai),
    ("/v1/responses", &["POST"], EndpointClass::OpenaiResponses),
    ("/v1/messages", &["POST"], EndpointClass::Anthropic),
    ("/api/pull", &["POST"], EndpointClass::Manage),
    ("/api/push", &["POST"], EndpointClass::Manage),
    ("/api/create", &["POST"], EndpointClass::Manage),
    ("/api/copy", &["POST"], EndpointClass::Manage),
    ("/api/delete", &["DELETE"], EndpointClass::Manage),
    ("/api/me", &["GET", "POST"], EndpointClass::Cloud),
    ("/api/signout", &["GET", "POST"], EndpointClass::Cloud),
];

/// The table's verdict for an accepted (method, path).
fn table_class(method: &str, path: &str) -> Option<EndpointClass> {
    if let Some((_, methods, class)) = TABLE.iter().find(|(p, _, _)| *p == path) {
        return methods.contains(&method).then_some(*class);
    }
    let one_segment = |rest: &str| !rest.is_empty() && !rest.contains('/');
    if let Some(m) = path.strip_prefix("/v1/models/") {
        return (one_segment(m) && method == "GET").then_some(EndpointClass::Openai);
    }
    if let Some(d) = path.strip_prefix("/api/blobs/") {
        return (one_segment(d) && matches!(method, "POST" | "HEAD"))
            .then_some(EndpointClass::Manage);
    }
    path.strip_prefix("/api/experimental/")
        .filter(|r| !r.is_empty())
        .map(|_| EndpointClass::Cloud)
}

/// The path as a checker independent of `is_canonical_path` sees it.
fn plainly_canonical(path: &str) -> bool {
    path == "/"
        || (path.starts_with('/')
            && !path.ends_with('/')
            && !path.contains("//")
            && path
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'%' && b != b'\\')
            && path.split('/').skip(1).all(|s| s != "." && s != ".."))
}

/// The forwarded body, read as Ollama reads it, obeys the model's load policy: no runner
/// option but num_ctx and the pinned ones (with their values), no unknown option, and the
/// keep_alive the policy allows.
fn load_policy_holds(o: &serde_json::Map<String, Value>, p: &LoadPolicy) {
    let bytes = serde_json::to_vec(o).expect("serialise");
    let fwd = parse_strict_object(&bytes).expect("forwarded body re-parses");
    match fuzz_support::go_field(&fwd, "options") {
        Some(Value::Object(opts)) => {
            for (k, v) in opts {
                match p.options.get(k) {
                    Some(pinned) => assert_eq!(v, pinned, "pinned option {k} changed"),
                    None => assert!(
                        k == "num_ctx" || is_sampling_option(k),
                        "option {k:?} forwarded"
                    ),
                }
            }
            for k in p.options.keys() {
                assert!(opts.contains_key(k), "pinned option {k} missing");
            }
        }
        other => assert!(p.options.is_empty(), "pins not sent: options {other:?}"),
    }
    let ka = fuzz_support::go_field(&fwd, "keep_alive").filter(|v| !v.is_null());
    match p.keep_alive {
        Some(KeepAlivePolicy::Pin(k)) => assert_eq!(ka, Some(&k.to_json())),
        Some(KeepAlivePolicy::Max(max)) => {
            if let Some(v) = ka {
                assert!(v.is_string(), "keep_alive {v} not normalised");
                let d = KeepAlive::from_json(v)
                    .ok()
                    .flatten()
                    .and_then(KeepAlive::positive);
                assert!(d.is_some_and(|d| d <= max), "keep_alive {v} beyond {max:?}");
            }
        }
        None => assert_eq!(ka, None, "keep_alive forwarded without a policy"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = req.parse(data) else {
        return;
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return;
    };
    // hyper: Method::from_bytes, then Uri::from_maybe_shared on the target bytes (the same
    // parser as try_from).
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let Ok(uri) = http::Uri::try_from(target.as_bytes()) else {
        return;
    };
    let body = &data[head_len..];
    let (m, path, query) = (method.as_str(), uri.path(), uri.query());

    let first = Route::classify(m, path, query);
    assert_eq!(first, Route::classify(m, path, query), "not deterministic");
    let route = match first {
        Ok(r) => r,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            // A refusal is never for a path the table serves with this method.
            if query.is_none() && is_canonical_path(path) {
                assert_eq!(table_class(m, path), None, "{m} {path} refused: {e}");
            }
            return;
        }
    };

    // Accepted: canonical, no query, exactly a table route, and the raw target is that path.
    assert!(query.is_none(), "accepted with a query: {target:?}");
    assert!(plainly_canonical(path), "accepted non-canonical {path:?}");
    assert_eq!(table_class(m, path), Some(route.class()), "{m} {path}");
    // http::Uri drops a `#fragment`; in absolute form (`http://host/api/chat`) the path
    // is what follows the authority.
    let target = target.split_once('#').map_or(target, |(t, _)| t);
    let origin = match target.split_once("://") {
        Some((_, rest)) if !target.starts_with('/') => rest.find('/').map_or("/", |i| &rest[i..]),
        _ => target,
    };
    assert_eq!(origin, path, "raw target {target:?} decided as {path:?}");
    match &route {
        Route::OaiModel(seg) => assert_eq!(path, format!("/v1/models/{seg}")),
        Route::Blob(seg) => assert_eq!(path, format!("/api/blobs/{seg}")),
        _ => {}
    }

    // The body, as service.rs reads it for this route.
    for sandbox in sandboxes() {
        if endpoint_allowed(sandbox, route.class()).is_err() {
            continue;
        }
        let mut obj = match route.body_kind(m) {
            BodyKind::Json => match parse_strict_object(body) {
                Ok(o) => Some(o),
                Err(_) => continue,
            },
            BodyKind::None | BodyKind::Opaque => None,
        };
        let mut again = obj.clone();
        let verdict = decide(sandbox, &route, obj.as_mut());
        assert_eq!(verdict, decide(sandbox, &route, again.as_mut()));
        assert_eq!(obj, again, "decide rewrote the body differently");
        // "No model" exactly when Ollama would read none from the fields its request
        // type has for this route (a `name` on chat is not one).
        if let (Err(Denied::ModelRequired { .. }), Some(o), false) =
            (&verdict, obj.as_ref(), route == Route::Copy)
        {
            assert_eq!(ollama_models(o, &route), Vec::<String>::new(), "{m} {path}");
        }
        let Ok(permit) = verdict else { continue };
        assert_eq!(permit.class, route.class());
        for model in &permit.models {
            assert!(protocol::policy::model_allowed(sandbox, model).is_ok());
        }
        let Some(o) = obj.as_mut() else { continue };
        if let (Some(model), true) = (
            permit.model().cloned(),
            matches!(
                route,
                Route::Chat | Route::Generate | Route::Embed | Route::Embeddings
            ),
        ) {
            let policy = config().num_ctx_policy(&model);
            // What Ollama would refuse (or run with no context) is refused: not forwarded.
            let Ok(rw) = rewrite_native(o, config(), &model) else {
                continue;
            };
            let n = rw.num_ctx;
            load_policy_holds(o, &config().load_policy(&model));
            if let Some(sent) = n.sent {
                // Ollama reads option keys exactly (Options.FromMap over a map).
                let opts = fuzz_support::go_field(o, "options").and_then(Value::as_object);
                let got = opts.and_then(|op| op.get("num_ctx"));
                // A policy sends a plain integer; without one the value goes as sent
                // (`1e6` stays `1e6`), so compare what Ollama reads.
                let read = got.and_then(|v| read_num_ctx(v).ok().flatten());
                assert_eq!(read, Some(sent), "num_ctx forwarded");
                if policy.is_some() {
                    assert_eq!(
                        got.and_then(Value::as_u64),
                        Some(sent),
                        "num_ctx not an integer"
                    );
                }
            }
            // Whatever was asked, in whatever form, a policy's bounds hold.
            match policy {
                Some(NumCtxPolicy::Pin(p)) => assert_eq!(n.sent, Some(p)),
                Some(NumCtxPolicy::Clamp { min, max, .. }) => {
                    let sent = n.sent.expect("a bounded policy always sends a num_ctx");
                    assert!(min.is_none_or(|m| sent >= m) && max.is_none_or(|m| sent <= m));
                }
                None => assert_eq!(n.sent, n.requested),
            }
        }
        // What is forwarded: the re-serialised object, read as Ollama reads it.
        let bytes = serde_json::to_vec(&Value::Object(o.clone())).expect("serialise");
        let forwarded = parse_strict_object(&bytes).expect("forwarded body re-parses");
        let read: Vec<ModelName> = ollama_models(&forwarded, &route)
            .iter()
            .map(|s| ModelName::parse(s).expect("forwarded model parses"))
            .collect();
        let decided: Vec<ModelName> = match route {
            Route::OaiModel(_) => Vec::new(),
            _ => permit.models.clone(),
        };
        assert_eq!(read, decided, "Ollama would read other models than decided");
    }
});
