//! Table-driven tests of the policy: which requests are allowed or denied, and why,
//! plus the vsock peer binding, cloud models, denial messages and the num_ctx rewrite.

use super::*;
use crate::config::{Config, DefaultsEnv, NumCtxPolicy};
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
        // Ollama's ChatRequest has no `name`: it names no model there (issue 15 item 9).
        (
            "POST",
            "/api/chat",
            r#"{"name":"llama3.3:70b"}"#,
            Err(Reason::ModelRequired),
        ),
        (
            "POST",
            "/api/chat",
            r#"{"name":"qwen2.5"}"#,
            Err(Reason::ModelRequired),
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
            Err(Reason::ModelRequired),
        ),
        (
            "POST",
            "/api/chat",
            r#"{"model":null,"name":"qwen2.5"}"#,
            Err(Reason::ModelRequired),
        ),
        (
            "POST",
            "/api/chat",
            r#"{"model":"  ","name":"qwen2.5"}"#,
            Err(Reason::ModelRequired),
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
    assert_eq!((e.status(), e.reason), (403, Reason::PeerNotAllowed));
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

/// Issue 15 item 9: the model comes only from the fields Ollama's request type for the
/// route has (`api/types.go`): `name` on show/pull/push/delete/create, never on chat,
/// generate, embed or embeddings, where a body without `model` is refused with 400.
#[test]
fn name_counts_only_where_ollama_reads_it() {
    let s = sandbox(
        r#"["qwen2.5:latest"]"#,
        r#"["chat", "generate", "embed", "list", "openai", "manage"]"#,
    );
    for path in [
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/embeddings",
    ] {
        for body in [
            r#"{"name":"qwen2.5"}"#,
            r#"{"name":"llama3.3:70b"}"#,
            r#"{"model":"","name":"qwen2.5"}"#,
            r#"{"NAME":"qwen2.5"}"#,
            r#"{"prompt":"hi"}"#,
        ] {
            let d = run(&s, "POST", path, body).expect_err(body);
            assert_eq!(d, Denied::ModelRequired { field: "model" }, "{path} {body}");
            let e = d.to_error();
            assert_eq!((e.status(), e.reason), (400, Reason::ModelRequired));
            assert_eq!(
                e.full_message(),
                "ollama-bridge: model is required (field \"model\")"
            );
        }
        // `model` decides; a `name` beside it is left for Ollama to ignore.
        let mut obj = parse_strict_object(br#"{"model":"qwen2.5","name":"llama3.3:70b"}"#).unwrap();
        let route = Route::classify("POST", path, None).unwrap();
        let p = decide(&s, &route, Some(&mut obj)).expect(path);
        assert_eq!(p.model().unwrap().to_string(), "qwen2.5:latest");
        assert_eq!(obj["name"], "llama3.3:70b");
    }
    for (m, path) in [
        ("POST", "/api/show"),
        ("POST", "/api/pull"),
        ("POST", "/api/push"),
        ("POST", "/api/create"),
        ("DELETE", "/api/delete"),
    ] {
        for (body, want) in [
            (r#"{"name":"qwen2.5"}"#, Ok("qwen2.5:latest")),
            (r#"{"model":"","name":"qwen2.5"}"#, Ok("qwen2.5:latest")),
            (r#"{"Name":"qwen2.5"}"#, Ok("qwen2.5:latest")),
            (r#"{"name":"llama3.3:70b"}"#, Err(Reason::ModelNotAllowed)),
            (
                r#"{"model":"llama3.3:70b","name":"qwen2.5"}"#,
                Err(Reason::ModelNotAllowed),
            ),
            (
                r#"{"model":"qwen2.5","name":"llama3.3:70b"}"#,
                Ok("qwen2.5:latest"),
            ),
            (r#"{}"#, Err(Reason::ModelRequired)),
        ] {
            let got = run(&s, m, path, body);
            match (want, &got) {
                (Ok(name), Ok(p)) => {
                    assert_eq!(p.model().unwrap().to_string(), name, "{path} {body}")
                }
                (Err(r), Err(d)) => assert_eq!(d.to_error().reason, r, "{path} {body}"),
                _ => panic!("{path} {body}: want {want:?}, got {got:?}"),
            }
        }
    }
    // The OpenAI routes read `model` alone, as Ollama's openai package does.
    for path in ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"] {
        let d = run(&s, "POST", path, r#"{"name":"qwen2.5"}"#).expect_err(path);
        assert_eq!(d.to_error().reason, Reason::ModelRequired, "{path}");
    }
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
    assert_eq!(e.status(), 403);
    assert_eq!(
        e.full_message(),
        "ollama-bridge: model \"llama3.3:70b\" is not allowed for sandbox \"automation\" (allowed: qwen2.5:7b, llama3.2:3b)"
    );
}

#[test]
fn num_ctx_rewrite() {
    let mut o = parse_strict_object(br#"{"model":"m","options":{"num_ctx":2048,"temperature":0}}"#)
        .unwrap();
    let n = apply_num_ctx(&mut o, Some(NumCtxPolicy::Pin(32768))).unwrap();
    assert_eq!(
        n,
        NumCtx {
            requested: Some(2048),
            sent: Some(32768)
        }
    );
    assert_eq!(o["options"]["num_ctx"], 32768);
    assert_eq!(o["options"]["temperature"], 0);
    // Ollama reads option keys exactly: NUM_CTX is not num_ctx. A policy removes it.
    let mut o = parse_strict_object(br#"{"model":"m","options":{"NUM_CTX":2048}}"#).unwrap();
    let n = apply_num_ctx(&mut o, Some(NumCtxPolicy::Pin(32768))).unwrap();
    assert_eq!(n.requested, None);
    assert!(o["options"].get("NUM_CTX").is_none());
    let mut o = parse_strict_object(br#"{"model":"m"}"#).unwrap();
    let floor = NumCtxPolicy::Clamp {
        min: Some(8192),
        max: None,
        default: None,
    };
    let n = apply_num_ctx(&mut o, Some(floor)).unwrap();
    assert_eq!(n.sent, Some(8192));
    assert_eq!(o["options"]["num_ctx"], 8192);
    let mut o = parse_strict_object(br#"{"model":"m","options":{"num_ctx":100}}"#).unwrap();
    assert_eq!(
        apply_num_ctx(&mut o, None).unwrap(),
        NumCtx {
            requested: Some(100),
            sent: Some(100)
        }
    );
}

/// Every form the hostile review sent, read as Ollama reads it, then capped at 16384.
#[test]
fn num_ctx_is_read_as_ollama_reads_it_and_always_capped() {
    let cap = NumCtxPolicy::Clamp {
        min: None,
        max: Some(16384),
        default: None,
    };
    for (num_ctx, requested) in [
        ("1e6", 1_000_000),
        ("1000000.0", 1_000_000),
        ("16385.0", 16385),
        ("65536.9", 65536),
        ("2e9", 2_000_000_000),
        ("1.6385E4", 16385),
        ("99999999999999999999999", i64::MAX as u64),
        ("18446744073709551615", i64::MAX as u64),
        ("4096", 4096),
        ("0.9e1", 9),
    ] {
        let body = format!(r#"{{"model":"m","options":{{"num_ctx":{num_ctx}}}}}"#);
        let mut o = parse_strict_object(body.as_bytes()).unwrap();
        let n = apply_num_ctx(&mut o, Some(cap)).unwrap();
        assert_eq!(n.requested, Some(requested), "{num_ctx}");
        let sent = requested.min(16384);
        assert_eq!(n.sent, Some(sent), "{num_ctx}");
        assert_eq!(
            o["options"]["num_ctx"],
            serde_json::json!(sent),
            "{num_ctx}"
        );
        assert!(
            o["options"]["num_ctx"].is_u64(),
            "sent as an integer: {num_ctx}"
        );
    }
    // Nothing asked for, in any shape: the cap is sent, never Ollama's own default.
    for options in [
        "",
        r#","options":null"#,
        r#","options":{}"#,
        r#","options":[]"#,
        r#","options":{"num_ctx":null}"#,
    ] {
        let body = format!(r#"{{"model":"m"{options}}}"#);
        let mut o = parse_strict_object(body.as_bytes()).unwrap();
        let n = apply_num_ctx(&mut o, Some(cap)).unwrap();
        assert_eq!(
            n,
            NumCtx {
                requested: None,
                sent: Some(16384)
            },
            "{options}"
        );
        assert_eq!(o["options"]["num_ctx"], 16384, "{options}");
    }
    // What Ollama refuses, and what is no context length: 400, with or without a policy.
    for bad in [
        r#""8192""#,
        "true",
        "[1]",
        r#"{"n":1}"#,
        "0",
        "-1",
        "-5.5",
        "0.5",
        "-0.0",
    ] {
        let body = format!(r#"{{"model":"m","options":{{"num_ctx":{bad}}}}}"#);
        for policy in [None, Some(cap)] {
            let mut o = parse_strict_object(body.as_bytes()).unwrap();
            let e = apply_num_ctx(&mut o, policy).unwrap_err();
            assert_eq!(e.to_error().status(), 400, "{bad}");
        }
    }
}
