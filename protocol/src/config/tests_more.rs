//! Unit tests of the configuration, continued: load policies, `early_headers`, the
//! quick start's flags, every error on its key's line, warnings.

use super::tests::{env, EXAMPLE};
use super::*;

#[test]
fn load_policies_merge_by_group_from_the_most_specific_table() {
    let text = r#"
[[sandbox]]
name = "a"
listen = "unix:/r/a.sock"

[model."*"]
num_ctx_max = 8192
keep_alive_max = "10m"
options = { num_gpu = 99, use_mmap = false }

[model."big:*"]
keep_alive = "1h30m"
options = { num_gpu = 40, num_thread = 8, main_gpu = 1, num_batch = 256, draft_num_predict = 4 }

[model."tiny:*"]
keep_alive = -1

[model."zero:*"]
keep_alive = 0
"#;
    let c = Config::parse(text, &env()).unwrap();
    let m = |s: &str| crate::ModelName::parse(s).unwrap();
    // big:70b: its own keep_alive and pins, num_ctx and use_mmap from "*".
    let big = c.load_policy(&m("big:70b"));
    assert_eq!(
        big.keep_alive,
        Some(KeepAlivePolicy::Pin(KeepAlive::For(Duration::from_secs(
            5400
        ))))
    );
    assert_eq!(
        serde_json::Value::Object(big.options),
        serde_json::json!({"num_gpu": 40, "num_thread": 8, "main_gpu": 1, "num_batch": 256,
                           "draft_num_predict": 4, "use_mmap": false})
    );
    assert_eq!(
        c.num_ctx_policy(&m("big:70b")),
        Some(NumCtxPolicy::Clamp {
            min: None,
            max: Some(8192),
            default: None
        })
    );
    let other = c.load_policy(&m("qwen2.5:7b"));
    assert_eq!(
        other.keep_alive,
        Some(KeepAlivePolicy::Max(Duration::from_secs(600)))
    );
    assert_eq!(other.options.len(), 2);
    assert_eq!(
        c.load_policy(&m("tiny:1b")).keep_alive,
        Some(KeepAlivePolicy::Pin(KeepAlive::Forever))
    );
    assert_eq!(
        c.load_policy(&m("zero:1b")).keep_alive,
        Some(KeepAlivePolicy::Pin(KeepAlive::For(Duration::ZERO)))
    );
    // No [model] table at all: nothing pinned, keep_alive removed.
    let bare = Config::parse(
        "[[sandbox]]\nname = \"a\"\nlisten = \"unix:/r/a.sock\"\n",
        &env(),
    );
    assert_eq!(bare.unwrap().load_policy(&m("x")), LoadPolicy::default());
}

#[test]
fn load_policy_errors_are_all_reported_with_their_lines() {
    let text = r#"[model."a:*"]
options = { temperature = 0.5, num_ctx = 4096, bogus = 1, num_gpu = "99", use_mmap = 1, num_batch = 0, num_gpu_x = 1 }

[model."b:*"]
keep_alive = "30m"
keep_alive_max = "1h"

[model."c:*"]
keep_alive_max = 0

[model."d:*"]
keep_alive = "30"
keep_alive_max = true
num_ctx = 0
"#;
    let e = Config::parse(text, &env()).unwrap_err();
    let all = e.to_string();
    for want in [
        "model \"a:*\": options.temperature is a sampling option, which each request chooses; only runner options can be pinned: num_batch, num_gpu, main_gpu, use_mmap, num_thread, draft_num_predict",
        "options.num_ctx: use the num_ctx key",
        "options.bogus is not an Ollama runner option",
        "options.num_gpu must be an integer",
        "options.use_mmap must be true or false",
        "options.num_batch must be at least 1, not 0",
        "model \"b:*\": keep_alive pins the value; use it or keep_alive_max, not both",
        "model \"c:*\": keep_alive_max must be a positive duration",
        "context lengths must be between 1 and",
    ] {
        assert!(all.contains(want), "want {want:?} in {all}");
    }
    let line = |needle: &str| {
        e.0.iter()
            .find(|x| x.message.contains(needle))
            .unwrap()
            .line
    };
    // Each on the line of the key it is about, not the table's.
    assert_eq!(line("options.bogus"), Some(2));
    assert_eq!(line("not both"), Some(5));
    assert_eq!(line("keep_alive_max must be"), Some(9));
    // A table with both keep_alive keys is one error, not a parse of each.
    assert!(!all.contains("missing unit"), "{all}");
    let one = Config::parse("[model.\"d:*\"]\nkeep_alive = \"30\"\n", &env()).unwrap_err();
    assert!(
        one.to_string()
            .contains("keep_alive: missing unit in duration \"30\""),
        "{one}"
    );
    let ty = Config::parse("[model.\"d:*\"]\nkeep_alive = true\n", &env()).unwrap_err();
    assert!(
        ty.to_string().contains("keep_alive: expected a duration"),
        "{ty}"
    );
}

#[test]
fn early_headers_take_a_duration_or_off() {
    let with = |v: &str| {
        let text = format!(
            "[upstream]\nearly_headers = \"{v}\"\n{}",
            &EXAMPLE[EXAMPLE.find("[audit]").unwrap()..]
        );
        Config::parse(&text, &env()).unwrap().upstream.early_headers
    };
    assert_eq!(with("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(with("off"), None);
}

#[test]
fn quick_start_flags_are_their_configuration_keys() {
    let flags = super::QuickFlags {
        num_ctx: vec!["qwen2.5:*=12345".into()],
        audit: Some("/srv/audit.jsonl".into()),
        metrics: Some("127.0.0.1:9464".into()),
        socket_owner: Some("1000:1000".into()),
        socket_mode: Some("0600".into()),
        max_parallel: Some("2".into()),
    };
    let c = Config::quick_start(
        &env(),
        "unix:/run/q.sock",
        "http://127.0.0.1:11434",
        &[],
        &flags,
    )
    .unwrap();
    let q = crate::ModelName::parse("qwen2.5:7b").unwrap();
    assert_eq!(c.num_ctx_policy(&q), Some(NumCtxPolicy::Pin(12345)));
    assert_eq!(c.audit.path, std::path::PathBuf::from("/srv/audit.jsonl"));
    assert!(c.metrics.is_some());
    assert_eq!(c.sandboxes[0].socket_owner, Some((1000, 1000)));
    assert_eq!(c.sandboxes[0].socket_mode, 0o600);
    assert!(c.sandboxes[0].openai_via_native);
    assert_eq!(c.upstream.max_parallel, Some(2));
    for (v, want) in [("off", None), ("64", Some(64))] {
        let f = super::QuickFlags {
            max_parallel: Some(v.into()),
            ..Default::default()
        };
        let c = Config::quick_start(&env(), "unix:/run/q.sock", "http://x:1", &[], &f).unwrap();
        assert_eq!(c.upstream.max_parallel, want, "{v}");
    }
    let f = super::QuickFlags {
        max_parallel: Some("0".into()),
        ..Default::default()
    };
    let e = Config::quick_start(&env(), "unix:/run/q.sock", "http://x:1", &[], &f).unwrap_err();
    assert!(
        e.to_string().contains("max_parallel must be between 1"),
        "{e}"
    );
    for bad in ["qwen2.5:7b", "=5", "m=x"] {
        let f = super::QuickFlags {
            num_ctx: vec![bad.into()],
            ..Default::default()
        };
        let e = Config::quick_start(&env(), "unix:/run/q.sock", "http://x:1", &[], &f).unwrap_err();
        assert!(e.to_string().contains("MODEL=N"), "{bad}: {e}");
    }
    let f = super::QuickFlags {
        metrics: Some("0.0.0.0:9464".into()),
        ..Default::default()
    };
    let e = Config::quick_start(&env(), "unix:/run/q.sock", "http://x:1", &[], &f).unwrap_err();
    assert!(e.to_string().starts_with("command line: "), "{e}");
}

/// Every error is reported, serde's (unknown keys, bad values) and the validators', each
/// on the line of its key; a key serde refuses is left out and the rest still checked.
#[test]
fn every_error_is_reported_on_the_line_of_its_key() {
    let text = r#"[upstream]
idle_timeout = "0s"
nope = 1

[[sandbox]]
name = "a"
listen = "unix:/run/a.sock"
endpoints = ["chat",
  "bogus"]
max_body = "huge"
socket_mode = "999"

[[sandbox]]
name = "b"
listen = "unix:/run/a.sock"
max_connections = 0

[[sandbox]]
name = "bad name"
listen = "tcp:1"
max_concurrent = 0
"#;
    let e = Config::parse(text, &env()).unwrap_err();
    let got: Vec<(Option<usize>, &str)> =
        e.0.iter()
            .map(|x| (x.line, x.message.split(':').next().unwrap()))
            .collect();
    let all = e.to_string();
    for (line, start) in [
        (3, "unknown field `nope`"),
        (9, "unknown variant `bogus`"),
        (10, "invalid size \"huge\""),
        (2, "[upstream] idle_timeout must be greater than zero"),
        (11, "sandbox \"a\""),
        (15, "sandbox \"b\""),
        (16, "sandbox \"b\""),
        (19, "sandbox \"bad name\": invalid sandbox name"),
        (20, "sandbox \"bad name\": invalid listen address"),
        (21, "sandbox \"bad name\": max_concurrent"),
    ] {
        assert!(
            e.0.iter()
                .any(|x| x.line == Some(line) && x.message.starts_with(start)),
            "want {start:?} on line {line}: {got:?} {all}"
        );
    }
    assert_eq!(e.0.len(), 10, "{all}");
}

/// Allowed but surely wrong: a warning, not an error, each on its key's line.
#[test]
fn surely_wrong_values_are_warnings() {
    let text = "[[sandbox]]\nname = \"a\"\nlisten = \"unix:/run/a.sock\"\nendpoints = []\n";
    let c = Config::parse(text, &env()).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert_eq!(c.warnings[0].line, Some(4));
    assert!(c.warnings[0].message.contains("endpoints = []"));
    assert!(Config::parse(EXAMPLE, &env()).unwrap().warnings.is_empty());
    // A model glob with a URL's shape is no name Ollama has: refused.
    let url =
        "[[sandbox]]\nname = \"a\"\nlisten = \"unix:/run/a.sock\"\nmodels = [\"https://evil/x\"]\n";
    let e = Config::parse(url, &env()).unwrap_err();
    assert_eq!(e.0[0].line, Some(4), "{e}");
    assert!(e.0[0].message.contains("invalid model name"), "{e}");
}

#[test]
fn tool_salvage_is_on_unless_the_most_specific_table_says_no() {
    let text = r#"
[[sandbox]]
name = "a"
listen = "unix:/r/a.sock"

[model."*"]
tool_salvage = false

[model."llama3.2:*"]
tool_salvage = true
keep_alive = "5m"

[model."llama3.2:1b"]
num_ctx = 4096
"#;
    let c = Config::parse(text, &env()).unwrap();
    let m = |s: &str| crate::ModelName::parse(s).unwrap();
    assert!(!c.tool_salvage(&m("qwen2.5:7b")));
    assert!(c.tool_salvage(&m("llama3.2:3b")));
    assert!(
        c.tool_salvage(&m("llama3.2:1b")),
        "a table without the key does not decide"
    );
    let bare = Config::parse(
        "[[sandbox]]\nname = \"a\"\nlisten = \"unix:/r/a.sock\"\n",
        &env(),
    );
    assert!(bare.unwrap().tool_salvage(&m("x")));
    let bad = "[[sandbox]]\nname = \"a\"\nlisten = \"unix:/r/a.sock\"\n[model.\"*\"]\ntool_salvage = \"yes\"\n";
    assert!(Config::parse(bad, &env()).is_err());
}

#[test]
fn max_parallel_and_weight_have_defaults_and_off() {
    let base = "[[sandbox]]\nname = \"a\"\nlisten = \"unix:/a\"\n";
    let c = Config::parse(base, &env()).unwrap();
    assert_eq!(c.upstream.max_parallel, Some(super::DEFAULT_MAX_PARALLEL));
    assert_eq!(c.sandboxes[0].weight, 1);
    let c = Config::parse(
        &format!("[upstream]\nmax_parallel = \"off\"\n{base}weight = 3\n"),
        &env(),
    )
    .unwrap();
    assert_eq!(c.upstream.max_parallel, None);
    assert_eq!(c.sandboxes[0].weight, 3);
    let c = Config::parse(&format!("[upstream]\nmax_parallel = 16\n{base}"), &env()).unwrap();
    assert_eq!(c.upstream.max_parallel, Some(16));
    // queue_timeout no longer needs max_concurrent: it bounds the fair queue's wait too.
    let c = Config::parse(&format!("{base}queue_timeout = \"5s\"\n"), &env()).unwrap();
    assert_eq!(
        c.sandboxes[0].limits.queue_timeout,
        Some(std::time::Duration::from_secs(5))
    );
}

#[test]
fn token_budgets_and_preloads() {
    let text = r#"[[sandbox]]
name = "a"
listen = "unix:/r/a.sock"
tokens_per_hour = 1000
tokens_per_day = 500

[[sandbox]]
name = "b"
listen = "unix:/r/b.sock"

[model."qwen2.5"]
preload = true

[model."llama3.2:*"]
num_ctx = 8192
"#;
    let c = Config::parse(text, &env()).unwrap();
    let b = c.sandboxes[0].tokens;
    assert_eq!((b.per_hour, b.per_day), (Some(1000), Some(500)));
    assert!(!c.sandboxes[1].tokens.is_set(), "no budget by default");
    // A day budget under the hour's: allowed, but said, on its line.
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert_eq!(c.warnings[0].line, Some(5));
    assert!(c.warnings[0].message.contains("tokens_per_day (500)"));
    let pre: Vec<String> = c.preloads().iter().map(ToString::to_string).collect();
    assert_eq!(pre, ["qwen2.5:latest"]);

    let bad = text
        .replace("tokens_per_hour = 1000", "tokens_per_hour = 0")
        .replace(
            "[model.\"llama3.2:*\"]",
            "[model.\"llama3.2:*\"]\npreload = true",
        );
    let e = Config::parse(&bad, &env()).unwrap_err();
    let on = |line: usize, needle: &str| {
        e.0.iter()
            .any(|x| x.line == Some(line) && x.message.contains(needle))
    };
    assert!(on(4, "tokens_per_hour must be at least 1"), "{e}");
    assert!(on(15, "preload = true needs an exact model name"), "{e}");
    assert!(on(15, "\"llama3.2:*\" is a glob"), "{e}");
    assert_eq!(e.0.len(), 2, "{e}");
}
