//! Unit tests of the configuration: the README's example, errors with lines, limits,
//! metrics, context policies and the built-in defaults.

use super::values::parse_upstream;
use super::*;

pub(super) fn env() -> DefaultsEnv {
    DefaultsEnv {
        is_root: true,
        ..Default::default()
    }
}

pub(super) const EXAMPLE: &str = r#"
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
    assert_eq!(c.upstream.early_headers, Some(Duration::from_secs(2)));
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
        ("[upstream]\nearly_headers=\"soon\"\n", "or \"off\""),
        (
            "[upstream]\nmax_parallel=0\n",
            "max_parallel must be between 1",
        ),
        (
            "[upstream]\nmax_parallel=\"none\"\n",
            "expected a number or \"off\"",
        ),
        (
            "[upstream]\nearly_headers=\"0s\"\n",
            "early_headers must be",
        ),
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
        ("weight=0\n", "weight must be between 1 and 1024"),
        ("weight=2000\n", "weight must be between 1 and 1024"),
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

/// Issue 16: OpenAI clients get the native path unless an operator turns it off, in a
/// file, in the built-in defaults and in the quick start alike.
#[test]
fn openai_via_native_is_on_by_default() {
    let on = "[[sandbox]]\nname = \"a\"\nlisten = \"unix:/r/a.sock\"\n";
    let c = Config::parse(on, &env()).unwrap();
    assert!(c.sandboxes[0].openai_via_native, "absent key");
    let off = format!("{on}openai_via_native = false\n");
    let c = Config::parse(&off, &env()).unwrap();
    assert!(!c.sandboxes[0].openai_via_native, "turned off");
    assert!(Config::builtin(&env()).sandboxes[0].openai_via_native);
    let quick = Config::quick(
        &env(),
        ListenAddr::Unix("/r/q.sock".into()),
        "http://127.0.0.1:1",
        &["qwen2.5:7b".to_owned()],
    )
    .unwrap();
    assert!(quick.sandboxes[0].openai_via_native, "quick start");
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
fn handoff_is_on_for_unix_listeners_and_an_error_on_vsock() {
    let sb = |listen: &str, key: &str| {
        format!("[[sandbox]]\nname = \"a\"\nlisten = \"{listen}\"\n{key}\n")
    };
    let parse = |t: String| Config::parse(&t, &env());
    assert!(parse(sb("unix:/r/a.sock", "")).unwrap().sandboxes[0].handoff);
    assert!(
        !parse(sb("unix:/r/a.sock", "handoff = false"))
            .unwrap()
            .sandboxes[0]
            .handoff
    );
    assert!(!parse(sb("vsock:5000", "")).unwrap().sandboxes[0].handoff);
    assert!(
        !parse(sb("vsock-uds:/r/v.sock_5000", "handoff = false"))
            .unwrap()
            .sandboxes[0]
            .handoff
    );
    for listen in ["vsock:5000", "vsock-uds:/r/v.sock_5000"] {
        let e = parse(sb(listen, "handoff = true")).unwrap_err().to_string();
        assert!(e.contains("handoff applies only to unix: listeners"), "{e}");
    }
    assert!(parse(sb("unix:/r/a.sock", "handoff = \"yes\"")).is_err());
    assert!(Config::builtin(&env()).sandboxes[0].handoff);
}
