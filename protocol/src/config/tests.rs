//! Unit tests of the configuration: the README's example, errors with lines, limits,
//! metrics, context policies and the built-in defaults.

use super::values::parse_upstream;
use super::*;

fn env() -> DefaultsEnv {
    DefaultsEnv {
        is_root: true,
        ..Default::default()
    }
}

const EXAMPLE: &str = r#"
[upstream]
url = "http://127.0.0.1:11434"
connect_timeout = "3s"
header_timeout = "10m"
idle_timeout = "2m"

[audit]
path = "/var/log/ollama-bridge/audit.jsonl"

[[sandbox]]
name = "automation"
listen = "unix:/run/ollama-bridge/automation/ollama.sock"
socket_mode = "0660"
socket_owner = "1000:1000"
models = ["qwen2.5:7b", "llama3.2:*"]
endpoints = ["chat", "generate", "embed", "list", "openai"]
openai_via_native = true
max_concurrent = 4
max_body = "32MiB"

[model."qwen2.5:7b"]
num_ctx = 32768
"#;

#[test]
fn contract_example_parses() {
    let c = Config::parse(EXAMPLE, &env()).unwrap();
    assert_eq!(c.upstream.authority, "127.0.0.1:11434");
    assert_eq!(c.upstream.header_timeout, Duration::from_secs(600));
    let s = &c.sandboxes[0];
    assert_eq!(s.name.as_str(), "automation");
    assert_eq!(s.socket_owner, Some((1000, 1000)));
    assert_eq!(s.max_body, 32 << 20);
    assert_eq!(s.max_concurrent, Some(4));
    let q = crate::ModelName::parse("qwen2.5:7b").unwrap();
    assert_eq!(c.num_ctx_policy(&q), Some(NumCtxPolicy::Pin(32768)));
}

#[test]
fn unknown_key_has_its_line() {
    let e = Config::parse(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\nbogus_key = 1\n",
        &env(),
    )
    .unwrap_err();
    assert_eq!(e.0[0].line, Some(3), "{e}");
    assert!(e.0[0].message.contains("bogus_key"), "{e}");
}

#[test]
fn semantic_errors_are_all_reported() {
    let text = r#"
[upstream]
url = "https://x"

[[sandbox]]
name = "a"
listen = "unix:/a.sock"
socket_mode = "999"

[[sandbox]]
name = "a"
listen = "unix:/a.sock"

[model."m"]
num_ctx = 4
num_ctx_max = 8
"#;
    let e = Config::parse(text, &env()).unwrap_err();
    let all = e.to_string();
    for want in ["https", "socket_mode", "used by another", "not both"] {
        assert!(all.contains(want), "missing {want}: {all}");
    }
    assert!(e.0.iter().all(|e| e.line.is_some()), "{all}");
}

#[test]
fn bad_values_are_refused() {
    for (text, want) in [
        (
            "[[sandbox]]\nname=\"a\"\nlisten=\"tcp:1\"\n",
            "invalid listen",
        ),
        ("[upstream]\nconnect_timeout=\"3\"\n", "invalid duration"),
        (
            "[[sandbox]]\nname=\"a\"\nlisten=\"unix:/a\"\nendpoints=[\"chat\",\"bogus\"]\n",
            "bogus",
        ),
        (
            "[[sandbox]]\nname=\"a b\"\nlisten=\"unix:/a\"\n",
            "invalid sandbox name",
        ),
        ("", "no [[sandbox]]"),
    ] {
        let e = Config::parse(text, &env()).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

#[test]
fn limit_keys_parse_and_their_errors_have_lines() {
    let base = "[[sandbox]]\nname=\"a\"\nlisten=\"unix:/a\"\n";
    let c = Config::parse(
        &format!("{base}max_concurrent=2\nqueue_timeout=\"5s\"\nrequests_per_minute=30\nmax_headers=50\nmax_header_bytes=\"16KiB\"\nmax_connections=64\nkeepalive_timeout=\"10s\"\nrequest_header_timeout=\"2s\"\nmax_body=\"1MiB\"\nmax_body_buffer=\"3MiB\"\n"),
        &env(),
    )
    .unwrap();
    let l = c.sandboxes[0].limits;
    assert_eq!(l.queue_timeout, Some(Duration::from_secs(5)));
    assert_eq!(l.requests_per_minute, Some(30));
    assert_eq!((l.max_headers, l.max_header_bytes), (50, 16 << 10));
    assert_eq!(l.max_connections, 64);
    assert_eq!(l.max_body_buffer, 3 << 20);
    assert_eq!(l.keepalive_timeout, Duration::from_secs(10));
    assert_eq!(l.request_header_timeout, Duration::from_secs(2));
    for (extra, want) in [
        (
            "requests_per_minute=0\n",
            "requests_per_minute must be at least 1",
        ),
        (
            "queue_timeout=\"5s\"\n",
            "queue_timeout applies only with max_concurrent",
        ),
        (
            "max_header_bytes=\"1KiB\"\n",
            "max_header_bytes must be between",
        ),
        ("request_header_timeout=\"1x\"\n", "invalid duration"),
        (
            "max_body=\"2MiB\"\nmax_body_buffer=\"1MiB\"\n",
            "max_body_buffer (1MiB) must be at least max_body (2MiB)",
        ),
    ] {
        let e = Config::parse(&format!("{base}{extra}"), &env()).unwrap_err();
        assert!(e.to_string().contains(want), "{extra}: {e}");
        assert!(e.0[0].line.is_some(), "{e}");
    }
}

#[test]
fn metrics_listen_is_host_only() {
    let ok = |t: &str| {
        Config::parse(
            &format!("[metrics]\nlisten = \"{t}\"\n[[sandbox]]\nname=\"a\"\nlisten=\"unix:/a\"\n"),
            &env(),
        )
    };
    assert_eq!(
        ok("127.0.0.1:9464").unwrap().metrics,
        Some(MetricsListen::Tcp("127.0.0.1:9464".parse().unwrap()))
    );
    assert!(ok("[::1]:9464").is_ok());
    assert_eq!(
        ok("unix:/run/m.sock").unwrap().metrics,
        Some(MetricsListen::Unix("/run/m.sock".into()))
    );
    for bad in [
        "0.0.0.0:9464",
        "192.168.1.2:9464",
        "localhost:9464",
        "unix:rel",
    ] {
        let e = ok(bad).unwrap_err();
        assert_eq!(e.0[0].line, Some(2), "{bad}: {e}");
    }
}

#[test]
fn num_ctx_policies() {
    assert_eq!(NumCtxPolicy::Pin(8).apply(Some(2)), Some(8));
    assert_eq!(NumCtxPolicy::Pin(8).apply(None), Some(8));
    let c = NumCtxPolicy::Clamp {
        min: Some(4),
        max: Some(16),
        default: None,
    };
    assert_eq!(c.apply(None), Some(4));
    assert_eq!(c.apply(Some(2)), Some(4));
    assert_eq!(c.apply(Some(32)), Some(16));
    assert_eq!(c.apply(Some(8)), Some(8));
    // A cap alone still caps when nothing is asked: Ollama's own default may be larger.
    let hi = NumCtxPolicy::Clamp {
        min: None,
        max: Some(16),
        default: None,
    };
    assert_eq!(hi.apply(None), Some(16));
    assert_eq!(hi.apply(Some(1_000_000)), Some(16));
    let d = NumCtxPolicy::Clamp {
        min: Some(4),
        max: Some(16),
        default: Some(8),
    };
    assert_eq!(d.apply(None), Some(8));
    assert_eq!(d.apply(Some(2)), Some(4));
    let open = NumCtxPolicy::Clamp {
        min: None,
        max: None,
        default: Some(8),
    };
    assert_eq!(open.apply(None), Some(8));
    assert_eq!(open.apply(Some(100)), Some(100));
}

#[test]
fn num_ctx_default_must_lie_within_the_bounds() {
    let bad = "[model.\"m:*\"]\nnum_ctx_min = 8\nnum_ctx_max = 16\nnum_ctx_default = 32\n";
    let e = Config::parse(bad, &env()).unwrap_err().to_string();
    assert!(e.contains("num_ctx_default 32 is outside"), "{e}");
    let pinned = "[model.\"m:*\"]\nnum_ctx = 8\nnum_ctx_default = 8\n";
    let e = Config::parse(pinned, &env()).unwrap_err().to_string();
    assert!(e.contains("not both"), "{e}");
    let ok = "[[sandbox]]\nname = \"a\"\nlisten = \"unix:/r/a.sock\"\n[model.\"m:*\"]\nnum_ctx_max = 16\nnum_ctx_default = 12\n";
    assert!(Config::parse(ok, &env()).is_ok());
}

#[test]
fn builtin_defaults() {
    let c = Config::builtin(&env());
    assert_eq!(
        c.sandboxes[0].listen.to_string(),
        "unix:/run/ollama-bridge/ollama.sock"
    );
    assert_eq!(
        c.audit.path,
        PathBuf::from("/var/log/ollama-bridge/audit.jsonl")
    );
    let user = DefaultsEnv {
        is_root: false,
        xdg_runtime_dir: Some("/run/user/1000".into()),
        home: Some("/home/u".into()),
        uid: 1000,
        ..Default::default()
    };
    assert_eq!(
        user.default_socket(),
        PathBuf::from("/run/user/1000/ollama-bridge/ollama.sock")
    );
    assert_eq!(
        user.default_audit(),
        PathBuf::from("/home/u/.local/state/ollama-bridge/audit.jsonl")
    );
    assert_eq!(
        parse_upstream("http://localhost").unwrap().authority,
        "localhost:80"
    );
    assert!(parse_upstream("http://h:1/x").is_err());
}

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
    assert_eq!(line("options.bogus"), Some(1));
    assert_eq!(line("not both"), Some(4));
    assert_eq!(line("keep_alive_max must be"), Some(8));
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
