//! The load policy: which options survive, which pins are inserted, what keep_alive is
//! sent, and what the audit record is told — for each policy a `[model]` table can say.

use serde_json::{json, Value};

use super::*;
use crate::config::DefaultsEnv;
use crate::json::parse_strict_object;
use crate::ollama_opts::{RUNNER_OPTIONS, SAMPLING_OPTIONS};

const CONFIG: &str = r#"
[[sandbox]]
name = "s"
listen = "unix:/x.sock"

[model."*"]
options = { use_mmap = false }

[model."qwen2.5:7b"]
num_ctx = 8192
keep_alive = "30m"
options = { num_gpu = 99, num_batch = 512 }

[model."llama3.2:*"]
num_ctx_max = 16384
keep_alive_max = "10m"

[model."llama3.2:1b"]
options = { num_gpu = 0 }

[model."phi3:*"]
keep_alive = -1

[model."phi3:mini"]
keep_alive = 0
"#;

fn config() -> Config {
    Config::parse(CONFIG, &DefaultsEnv::default()).unwrap()
}

/// The body as forwarded and what the audit is told.
fn run(model: &str, body: Value) -> (Value, Rewrite) {
    let mut obj = parse_strict_object(body.to_string().as_bytes()).unwrap();
    let m = ModelName::parse(model).unwrap();
    let r = rewrite_native(&mut obj, &config(), &m).unwrap();
    (Value::Object(obj), r)
}

#[test]
fn sampling_options_pass_everything_else_is_removed() {
    let mut opts = Map::new();
    for k in SAMPLING_OPTIONS {
        opts.insert(k.into(), json!(1));
    }
    let sampling = Value::Object(opts.clone());
    for (k, _) in RUNNER_OPTIONS.iter().filter(|(k, _)| *k != "num_ctx") {
        opts.insert((*k).into(), json!(1));
    }
    for k in [
        "mirostat",
        "tfs_z",
        "numa",
        "low_vram",
        "F16_KV",
        "Use_Mlock",
        "future_opt",
    ] {
        opts.insert(k.into(), json!(1));
    }
    // gemma:2b: only `[model."*"]` applies (use_mmap pinned false).
    let (out, r) = run("gemma:2b", json!({"model": "gemma:2b", "options": opts}));
    let mut want = sampling.clone();
    want["use_mmap"] = json!(false);
    assert_eq!(out["options"], want);
    assert_eq!(
        r.load.options_removed,
        [
            "num_batch",
            "num_gpu",
            "main_gpu",
            "use_mmap",
            "num_thread",
            "draft_num_predict",
            "mirostat",
            "tfs_z",
            "numa",
            "low_vram",
            "F16_KV",
            "Use_Mlock",
            "future_opt"
        ]
    );
    // Option keys are exact: a case variant is an unknown key.
    let (out, r) = run(
        "gemma:2b",
        json!({"model": "gemma:2b", "options": {"Temperature": 1}}),
    );
    assert_eq!(out["options"], json!({"use_mmap": false}));
    assert_eq!(r.load.options_removed, ["Temperature"]);
}

#[test]
fn pins_are_inserted_per_name_from_the_most_specific_table() {
    // qwen2.5:7b: its own pins, plus use_mmap from "*"; num_ctx pinned by its own key.
    let (out, r) = run(
        "qwen2.5:7b",
        json!({"model": "qwen2.5:7b", "options": {"num_gpu": 0, "temperature": 0.2}}),
    );
    assert_eq!(
        out["options"],
        json!({"num_ctx": 8192, "temperature": 0.2, "num_gpu": 99, "num_batch": 512, "use_mmap": false})
    );
    assert_eq!(r.load.options_removed, ["num_gpu"]);
    // Nothing asked: the pins still go, in a new options object.
    for options in [None, Some(json!(null)), Some(json!([])), Some(json!("x"))] {
        let mut body = json!({"model": "llama3.2:1b"});
        if let Some(o) = options {
            body["options"] = o;
        }
        let (out, r) = run("llama3.2:1b", body);
        assert_eq!(
            out["options"],
            json!({"num_ctx": 16384, "num_gpu": 0, "use_mmap": false})
        );
        assert!(r.load.options_removed.is_empty());
    }
}

#[test]
fn without_pins_a_non_object_options_is_left_to_ollama() {
    let mut obj = parse_strict_object(br#"{"model":"m","options":"x"}"#).unwrap();
    assert!(apply_options(&mut obj, &Map::new()).is_empty());
    assert_eq!(obj["options"], "x");
    let mut obj = parse_strict_object(br#"{"model":"m","Options":{"num_gpu":0}}"#).unwrap();
    assert_eq!(apply_options(&mut obj, &Map::new()), ["num_gpu"]);
    assert_eq!(Value::Object(obj), json!({"model": "m", "options": {}}));
}

#[test]
fn num_ctx_keeps_its_own_policy() {
    let mut obj =
        parse_strict_object(br#"{"model":"m","options":{"num_ctx":4096,"num_gpu":1}}"#).unwrap();
    let none = LoadPolicy::default();
    let r = apply_load_policy(&mut obj, &none);
    assert_eq!(r.options_removed, ["num_gpu"]);
    assert_eq!(
        obj["options"],
        json!({"num_ctx": 4096}),
        "no num_ctx policy: it passes"
    );
    let (out, _) = run(
        "llama3.2:3b",
        json!({"model": "llama3.2:3b", "options": {"num_ctx": 1e6}}),
    );
    assert_eq!(out["options"]["num_ctx"], 16384);
}

#[test]
fn keep_alive_without_a_policy_is_removed() {
    for ka in [
        json!(0),
        json!(-1),
        json!("5m"),
        json!(300),
        json!("nope"),
        json!(true),
    ] {
        let (out, r) = run("gemma:2b", json!({"model": "gemma:2b", "keep_alive": ka}));
        assert!(out.get("keep_alive").is_none(), "{ka}");
        assert_eq!(r.load.keep_alive_sent, None);
        assert!(r.load.keep_alive_requested.is_some());
    }
    let (out, r) = run("gemma:2b", json!({"model": "gemma:2b", "keep_alive": null}));
    assert!(out.get("keep_alive").is_none());
    assert_eq!(r.load, LoadRewrite::default());
}

#[test]
fn keep_alive_max_passes_positive_values_capped() {
    let cases = [
        (json!("5m"), Some("5m")),
        (json!(300), Some("5m")),
        (json!(1.5), Some("1s500ms")),
        (json!("1h"), Some("10m")),
        (json!(1e30), Some("10m")),
        (json!(0), None),
        (json!("0s"), None),
        (json!(1e-10), None),
        (json!(-1), None),
        (json!("-5m"), None),
        (json!("5"), None),
        (json!({}), None),
    ];
    for (ka, sent) in cases {
        let body = json!({"model": "llama3.2:3b", "KEEP_ALIVE": ka});
        let (out, r) = run("llama3.2:3b", body);
        assert_eq!(out.get("KEEP_ALIVE"), None, "{ka}");
        assert_eq!(out.get("keep_alive").and_then(Value::as_str), sent, "{ka}");
        assert_eq!(r.load.keep_alive_sent.as_deref(), sent, "{ka}");
    }
    // Nothing asked: nothing sent.
    let (out, r) = run("llama3.2:3b", json!({"model": "llama3.2:3b"}));
    assert!(out.get("keep_alive").is_none());
    assert_eq!(r.load.keep_alive_sent, None);
}

#[test]
fn a_pinned_keep_alive_replaces_whatever_was_asked() {
    for ka in [
        None,
        Some(json!(0)),
        Some(json!(-1)),
        Some(json!("5h")),
        Some(json!([])),
    ] {
        let mut body = json!({"model": "qwen2.5:7b"});
        if let Some(k) = &ka {
            body["keep_alive"] = k.clone();
        }
        let (out, r) = run("qwen2.5:7b", body);
        assert_eq!(out["keep_alive"], "30m", "{ka:?}");
        assert_eq!(r.load.keep_alive_sent.as_deref(), Some("30m"));
    }
    // Forever (`-1`, from a less specific table) and zero (the most specific one).
    let (out, r) = run(
        "phi3:medium",
        json!({"model": "phi3:medium", "keep_alive": "5m"}),
    );
    assert_eq!(out["keep_alive"], -1);
    assert_eq!(r.load.keep_alive_sent.as_deref(), Some("-1"));
    let (out, _) = run("phi3:mini", json!({"model": "phi3:mini"}));
    assert_eq!(out["keep_alive"], "0s");
}

#[test]
fn the_audit_record_is_told() {
    let long = "9".repeat(200);
    let (_, r) = run(
        "qwen2.5:7b",
        json!({"model": "qwen2.5:7b", "keep_alive": long, "options": {"main_gpu": 1}}),
    );
    assert_eq!(
        r.load.keep_alive_requested.as_deref().map(str::len),
        Some(64)
    );
    let mut rec = AuditRecord::new(0, "r".into(), "s".into(), None, "POST".into(), "/".into());
    r.record(&mut rec);
    assert_eq!(rec.options_removed, ["main_gpu"]);
    assert_eq!(rec.keep_alive_sent.as_deref(), Some("30m"));
    assert_eq!(rec.num_ctx_sent, Some(8192));
    let (_, r) = run("gemma:2b", json!({"model": "gemma:2b", "keep_alive": -1}));
    assert_eq!(r.load.keep_alive_requested.as_deref(), Some("-1"));
}

#[test]
fn a_load_request_carries_what_a_request_would_after_the_policy() {
    let c = config();
    let m = |s: &str| ModelName::parse(s).unwrap();
    let body = load_request(&c, &m("qwen2.5:7b")).unwrap();
    assert_eq!(
        Value::Object(body.clone()),
        json!({"model": "qwen2.5:7b", "keep_alive": "30m",
               "options": {"num_ctx": 8192, "num_gpu": 99, "num_batch": 512, "use_mmap": false}})
    );
    // The same as a real request's body after the rewrite, prompt aside.
    let mut req = parse_strict_object(
        br#"{"model":"qwen2.5:7b","prompt":"hi","keep_alive":"1m","options":{"num_ctx":2}}"#,
    )
    .unwrap();
    rewrite_native(&mut req, &c, &m("qwen2.5:7b")).unwrap();
    req.remove("prompt");
    assert_eq!(req, body);
    // A clamp without a default leaves num_ctx to the lower bound or unset, as for a
    // request that asks none.
    let l = load_request(&c, &m("llama3.2:3b")).unwrap();
    assert_eq!(
        Value::Object(l),
        json!({"model": "llama3.2:3b", "options": {"num_ctx": 16384, "use_mmap": false}})
    );
}
