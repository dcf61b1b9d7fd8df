//! An arbitrary string as a model name: `ModelName::parse`, `ModelPattern`, and the
//! policy decision for request bodies and paths that name it.
//!
//! Properties: nothing panics; the canonical forms (`full()` and the short display
//! form) re-parse to the same name, so canonicalising is idempotent; canonical names are
//! lowercase ASCII; cloud detection agrees on every form, and a name written `*:cloud` or
//! `*-cloud` is always a cloud model; a name without wildcards is a literal pattern that
//! admits it; the decision for `{"model": s}` (chat, show), the legacy `{"name": s}` on
//! show and `GET /v1/models/{s}` is deterministic, agrees across them, and agrees with the
//! name's own verdict; `{"name": s}` on chat, generate, embed and embeddings, whose Ollama
//! request types have no `name` (`api/types.go`, ollama main fb30760 after v0.33.0-rc2),
//! names no model whatever `s` is: refused as `ModelRequired`, never decided on `s`.
//!
//! Against Ollama (`fuzz_support::ollama_name`, its Go `ParseRef` + `ParseName`
//! transliterated): a name parses exactly when Ollama accepts it, and names the model
//! Ollama runs, source suffixes included (`:local` is the base name; `:cloud`, `-cloud`
//! and `:tag:cloud` are cloud models, written `m:cloud` / `m:tag-cloud`). Appending
//! `:local` to a name without a source suffix names the same model; appending `:cloud`
//! names a cloud model, which a sandbox without the `cloud` class is denied.
#![no_main]

use fuzz_support::ollama_name::{self, OllamaName, Source};
use fuzz_support::sandboxes;
use libfuzzer_sys::fuzz_target;
use protocol::error::Reason;
use protocol::json::parse_strict_object;
use protocol::policy::{decide, model_allowed, Denied};
use protocol::route::Route;
use protocol::{EndpointClass, ModelName, ModelPattern};
use serde_json::json;

/// The decision for a body naming `raw` on `route`, decided twice.
fn decide_body(route: &Route, field: &str, raw: &str) -> Vec<Result<Vec<ModelName>, Denied>> {
    let body = serde_json::to_vec(&json!({ field: raw, "messages": [] })).expect("serialise");
    let obj = parse_strict_object(&body).expect("a plain body parses");
    sandboxes()
        .iter()
        .map(|s| {
            let first = decide(s, route, Some(&mut obj.clone()));
            assert_eq!(
                first,
                decide(s, route, Some(&mut obj.clone())),
                "not deterministic"
            );
            first.map(|p| p.models)
        })
        .collect()
}

/// A verdict without the field name a denial mentions.
type Brief = Result<Vec<ModelName>, (Reason, Option<ModelName>)>;

fn brief(v: &[Result<Vec<ModelName>, Denied>]) -> Vec<Brief> {
    v.iter()
        .map(|r| {
            r.clone()
                .map_err(|d| (d.to_error().reason, d.model().cloned()))
        })
        .collect()
}

/// The canonical full form the bridge gives the model Ollama runs.
fn canonical(o: &OllamaName) -> String {
    let tag = match (o.source, o.tag.as_str()) {
        (Source::Cloud, "latest") => "cloud".to_owned(),
        (Source::Cloud, t) => format!("{t}-cloud"),
        (_, t) => t.to_owned(),
    };
    format!("{}/{}/{}:{}", o.host, o.namespace, o.model, tag)
}

/// The name agrees with Ollama's reading of `raw`.
fn agrees_with_ollama(raw: &str, parsed: &Result<ModelName, protocol::model::ModelNameError>) {
    let ollama = ollama_name::parse(raw);
    match (parsed, &ollama) {
        (Ok(name), Some(o)) => {
            assert_eq!(name.full(), canonical(o), "{raw:?}");
            if o.source == Source::Cloud {
                assert!(name.is_cloud(), "{raw:?}");
            }
        }
        (Err(_), None) => {}
        (a, b) => panic!("{raw:?}: bridge {a:?}, Ollama {b:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = ModelName::parse(raw);
    assert_eq!(parsed, ModelName::parse(raw), "not deterministic");
    agrees_with_ollama(raw, &parsed);
    // Source suffixes appended to a name that has none.
    if let (Ok(name), Some(o)) = (&parsed, ollama_name::parse(raw)) {
        if o.source == Source::Unspecified {
            let base = raw.trim();
            let local = format!("{base}:local");
            let as_local = ModelName::parse(&local);
            agrees_with_ollama(&local, &as_local);
            assert_eq!(as_local.as_ref(), Ok(name), "{local:?}");
            let cloud = format!("{base}:cloud");
            let as_cloud = ModelName::parse(&cloud);
            agrees_with_ollama(&cloud, &as_cloud);
            let as_cloud = as_cloud.unwrap_or_else(|e| panic!("{cloud:?}: {e}"));
            assert!(as_cloud.is_cloud(), "{cloud:?}");
            for sandbox in sandboxes() {
                if !sandbox.endpoints.contains(&EndpointClass::Cloud) {
                    assert!(
                        matches!(
                            model_allowed(sandbox, &as_cloud),
                            Err(Denied::CloudModel { .. })
                        ),
                        "{cloud:?}"
                    );
                }
            }
        }
    }
    if let Ok(name) = &parsed {
        let full = name.full();
        let short = name.to_string();
        assert!(
            full.bytes()
                .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase()),
            "{full:?}"
        );
        for form in [&full, &short] {
            let again = ModelName::parse(form).unwrap_or_else(|e| panic!("{form:?}: {e}"));
            assert_eq!(&again, name, "{raw:?} -> {form:?}");
            assert_eq!(again.full(), full);
            assert_eq!(again.to_string(), short);
            assert_eq!(again.is_cloud(), name.is_cloud());
        }
        let lower = raw.trim().to_ascii_lowercase();
        if lower.ends_with(":cloud") || lower.ends_with("-cloud") {
            assert!(name.is_cloud(), "{raw:?} not seen as cloud");
        }
        for p in [&full, &short] {
            let pat = ModelPattern::parse(p).expect("a canonical name is a pattern");
            assert!(pat.is_literal() && pat.matches(name), "{p:?}");
        }
        if !raw.contains(['*', '?']) {
            let pat = ModelPattern::parse(raw).expect("a name is a pattern");
            assert!(pat.is_literal() && pat.matches(name), "{raw:?} as pattern");
        }
    }
    if let Ok(pat) = ModelPattern::parse(raw) {
        assert!(!pat.to_string().is_empty());
        let _ = pat.specificity();
    }

    // The decision, wherever Ollama reads the name.
    let chat = decide_body(&Route::Chat, "model", raw);
    assert_eq!(
        brief(&chat),
        brief(&decide_body(&Route::Show, "name", raw)),
        "model vs show's legacy name"
    );
    // Where Ollama's request type has no `name`, it names nothing: no model, refused.
    for route in [
        Route::Chat,
        Route::Generate,
        Route::Embed,
        Route::Embeddings,
    ] {
        for verdict in decide_body(&route, "name", raw) {
            assert_eq!(
                verdict,
                Err(Denied::ModelRequired { field: "model" }),
                "{route:?} read {raw:?} from name"
            );
        }
    }
    assert_eq!(
        chat,
        decide_body(&Route::Show, "model", raw),
        "chat vs show"
    );
    for (sandbox, verdict) in sandboxes().iter().zip(&chat) {
        match (&parsed, verdict) {
            (Ok(name), Ok(models)) => {
                assert_eq!(models, &vec![name.clone()]);
                assert!(model_allowed(sandbox, name).is_ok());
            }
            (Ok(name), Err(d)) => {
                assert_eq!(Some(d), model_allowed(sandbox, name).err().as_ref());
                if name.is_cloud() {
                    assert!(matches!(d, Denied::CloudModel { .. }), "{d:?}");
                }
            }
            (Err(_), Ok(_)) => panic!("{raw:?} permitted but does not parse"),
            (Err(_), Err(d)) => assert!(
                matches!(d, Denied::BadModel { .. } | Denied::ModelRequired { .. }),
                "{d:?}"
            ),
        }
        let _ = verdict.as_ref().map_err(|d| d.to_error().full_message());
    }
    let path = format!("/v1/models/{raw}");
    if let Ok(route @ Route::OaiModel(_)) = Route::classify("GET", &path, None) {
        for (sandbox, by_body) in sandboxes().iter().zip(&chat) {
            let by_path = decide(sandbox, &route, None).map(|p| p.models);
            match (by_path, by_body) {
                (Ok(a), Ok(b)) => assert_eq!(&a, b),
                (Err(Denied::BadModel { .. }), Err(Denied::BadModel { .. })) => {}
                (Err(a), Err(b)) => assert_eq!(a.model(), b.model()),
                (a, b) => panic!("path {a:?} vs body {b:?}"),
            }
        }
    }
});
