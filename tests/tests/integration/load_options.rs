//! Load-time options and keep_alive are the operator's, end to end: runner and unknown
//! options never reach Ollama, a model's pinned options and keep_alive are inserted into
//! every request for it (native routes and `openai_via_native`), `keep_alive_max` caps a
//! sandbox's keep_alive, and the audit record says what was removed and what was sent.

use bridge_tests::double::{Double, DoubleConfig};
use bridge_tests::harness::{config, socket, Host};
use bridge_tests::http::{bridge_status, collect, post, send_unix};
use serde_json::{json, Value};

const SANDBOX: &str = "models = [\"qwen2.5:7b\", \"llama3.2:*\"]\nendpoints = [\"chat\", \"generate\", \"embed\", \"openai\"]\nopenai_via_native = true";

const POLICY: &str = "[model.\"qwen2.5:7b\"]\nkeep_alive = \"30m\"\noptions = { num_gpu = 99, use_mmap = false }\n\n[model.\"llama3.2:*\"]\nkeep_alive_max = \"10m\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_options_and_keep_alive_are_the_operators_and_audited() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(&double.url(), &[("agent", SANDBOX)], POLICY)).await;
    let sock = socket(&host, "agent");
    let hi = json!([{"role": "user", "content": "hi"}]);
    // (path, body, the native route Ollama gets, the options and keep_alive it gets,
    //  options_removed, keep_alive_requested, keep_alive_sent)
    type Case<'a> = (
        &'a str,
        Value,
        &'a str,
        Value,
        Value,
        &'a [&'a str],
        Value,
        Value,
    );
    let cases: Vec<Case> = vec![
        (
            "/api/chat",
            json!({"model": "llama3.2:3b", "stream": false, "messages": hi, "keep_alive": "2h",
                   "options": {"num_gpu": 0, "num_batch": 1048576, "temperature": 0.1}}),
            "/api/chat",
            json!({"temperature": 0.1}),
            json!("10m"),
            &["num_gpu", "num_batch"],
            json!("2h"),
            json!("10m"),
        ),
        (
            "/api/generate",
            json!({"model": "llama3.2:3b", "stream": false, "prompt": "hi", "keep_alive": -1}),
            "/api/generate",
            Value::Null,
            Value::Null,
            &[],
            json!("-1"),
            Value::Null,
        ),
        (
            "/api/embed",
            json!({"model": "qwen2.5:7b", "input": "hi", "keep_alive": 0,
                   "options": {"num_gpu": 0, "main_gpu": 3}}),
            "/api/embed",
            json!({"num_gpu": 99, "use_mmap": false}),
            json!("30m"),
            &["num_gpu", "main_gpu"],
            json!("0"),
            json!("30m"),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "qwen2.5:7b", "messages": hi, "temperature": 0.5}),
            "/api/chat",
            json!({"temperature": 0.5, "top_p": 1.0, "num_gpu": 99, "use_mmap": false}),
            json!("30m"),
            &[],
            Value::Null,
            json!("30m"),
        ),
        (
            "/v1/embeddings",
            json!({"model": "qwen2.5:7b", "input": "hi"}),
            "/api/embed",
            json!({"num_gpu": 99, "use_mmap": false}),
            json!("30m"),
            &[],
            Value::Null,
            json!("30m"),
        ),
    ];
    for (path, body, native, options, keep_alive, ..) in &cases {
        double.clear();
        let (status, _, out) = collect(send_unix(&sock, post(path, body)).await.unwrap()).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&out));
        let got = double.requests();
        assert_eq!(got.len(), 1, "{path}");
        assert_eq!(got[0].path, *native, "{path}");
        let sent = got[0].json();
        assert_eq!(sent["options"], *options, "{path}: {sent}");
        assert_eq!(sent["keep_alive"], *keep_alive, "{path}: {sent}");
    }
    let audit = host.audit_records();
    assert_eq!(audit.len(), cases.len());
    for (r, (path, _, _, _, _, removed, requested, sent)) in audit.iter().zip(&cases) {
        assert_eq!(r["path"], *path, "{r}");
        // Omitted when there is nothing to say.
        match removed {
            [] => assert!(r.get("options_removed").is_none(), "{r}"),
            keys => assert_eq!(r["options_removed"], json!(keys), "{r}"),
        }
        assert_eq!(r["keep_alive_requested"], *requested, "{r}");
        assert_eq!(r["keep_alive_sent"], *sent, "{r}");
        assert_eq!(r.get("keep_alive_sent").is_some(), !sent.is_null(), "{r}");
    }

    // /_bridge/status shows each available model's load policy.
    let status = bridge_status(&sock).await;
    let entry = |m: &str| {
        status["available_models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["model"] == m)
            .cloned()
            .unwrap_or_else(|| panic!("{m} not in {status}"))
    };
    let q = entry("qwen2.5:7b");
    assert_eq!(q["keep_alive"], "30m", "{q}");
    assert_eq!(
        q["options_pinned"],
        json!({"num_gpu": 99, "use_mmap": false}),
        "{q}"
    );
    let l = entry("llama3.2:3b");
    assert_eq!(l["keep_alive_max"], "10m", "{l}");
    assert!(
        l.get("options_pinned").is_none() && l.get("keep_alive").is_none(),
        "{l}"
    );
}
