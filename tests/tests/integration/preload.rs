//! Models kept warm (`preload = true`): the double records bridge-host's load request —
//! an `/api/generate` without a prompt carrying the num_ctx, options and keep_alive the
//! policy gives, the same as a real request's — at start, again when Ollama comes back
//! after being unreachable, and after a reload that adds a preloaded model; a model Ollama
//! does not have is a warning, never fatal. Preloads and token budgets are in the
//! metrics. No sleeps for synchronisation: waits are for records, log lines and status.

use std::time::Duration;

use bridge_tests::double::{Double, DoubleConfig, Recorded};
use bridge_tests::harness::{config, socket, Host};
use bridge_tests::http::{bridge_status, collect, req, send_unix, GUARD};
use bridge_tests::native::chat_request;
use serde_json::{json, Value};

const MODELS: &str = r#"
[model."qwen2.5:7b"]
num_ctx = 8192
keep_alive = "30m"
options = { num_gpu = 99 }
preload = true

[model."missing:1b"]
preload = true

[metrics]
listen = "unix:{dir}/metrics.sock"
"#;

const ADDED: &str = r#"
[model."llama3.2:3b"]
num_ctx = 4096
preload = true
"#;

fn is_preload(r: &Recorded, model: &str) -> bool {
    r.header("x-ollama-bridge-preload").is_some()
        && r.path == "/api/generate"
        && r.json()["model"] == model
}

/// Waits until the double has recorded `n` preloads of `model`; returns the last.
async fn preloads(double: &Double, model: &str, n: usize) -> Recorded {
    tokio::time::timeout(GUARD, async {
        loop {
            let got: Vec<Recorded> = double
                .requests()
                .into_iter()
                .filter(|r| is_preload(r, model))
                .collect();
            if got.len() >= n {
                return got[n - 1].clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} preload(s) of {model} within the guard time"))
}

/// Waits until `/_bridge/status` says Ollama is (not) reachable.
async fn wait_reachable(sock: &std::path::Path, want: bool) {
    tokio::time::timeout(GUARD, async {
        while bridge_status(sock).await["upstream"]["reachable"] != want {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("Ollama reachable = {want} within the guard time"));
}

async fn metrics(host: &Host) -> String {
    let (s, _, b) = collect(
        send_unix(&host.path("metrics.sock"), req("GET", "/metrics", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    String::from_utf8(b.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preloaded_models_are_loaded_at_start_when_ollama_returns_and_after_a_reload() {
    let double = Double::start(DoubleConfig::default()).await;
    let addr = double.addr();
    let sandbox = [("a", "tokens_per_hour = 1000")];
    let host = Host::start(&config(&double.url(), &sandbox, MODELS)).await;
    let sock = socket(&host, "a");

    // At start: the load request carries exactly the policy, and no prompt.
    let load = preloads(&double, "qwen2.5:7b", 1).await;
    assert_eq!(load.method, "POST");
    assert_eq!(
        load.json(),
        json!({"model": "qwen2.5:7b", "keep_alive": "30m", "options": {"num_ctx": 8192, "num_gpu": 99}})
    );
    // A real request for the model carries the same load options: no reload.
    let (s, _, _) = collect(
        send_unix(
            &sock,
            chat_request("qwen2.5:7b", json!({"stream": false, "keep_alive": "5m"})),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    let chat = double
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/chat")
        .expect("the chat reached the double")
        .json();
    assert_eq!(chat["options"], load.json()["options"], "{chat}");
    assert_eq!(chat["keep_alive"], load.json()["keep_alive"], "{chat}");

    // A model Ollama does not have: a warning, and the bridge keeps serving.
    let warn = host.wait_log("preload failed").await;
    assert!(warn.contains("missing:1b"), "{warn}");
    let m = metrics(&host).await;
    for want in [
        r#"ollama_bridge_preloads_total{model="qwen2.5:7b",result="ok"} 1"#,
        r#"ollama_bridge_preloads_total{model="missing:1b",result="failed"} 1"#,
        r#"ollama_bridge_token_budget_left{sandbox="a",window="hour"}"#,
        r#"ollama_bridge_token_budget_used{sandbox="a",window="day"}"#,
    ] {
        assert!(m.contains(want), "{want} in {m}");
    }

    // Ollama goes away, and comes back on the same address: loaded again.
    drop(double);
    wait_reachable(&sock, false).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let double = Double::serve(listener, DoubleConfig::default());
    wait_reachable(&sock, true).await;
    let again = preloads(&double, "qwen2.5:7b", 1).await;
    assert_eq!(again.json(), load.json());
    host.wait_log("Ollama is back: loading the preloaded models again")
        .await;

    // A reload that adds a preloaded model loads it (and only it).
    let text = config(&double.url(), &sandbox, &format!("{MODELS}{ADDED}"));
    host.reconfigure(&text);
    let added = preloads(&double, "llama3.2:3b", 1).await;
    assert_eq!(
        added.json(),
        json!({"model": "llama3.2:3b", "options": {"num_ctx": 4096}})
    );
    let qwen = double
        .requests()
        .into_iter()
        .filter(|r| is_preload(r, "qwen2.5:7b"))
        .count();
    assert_eq!(qwen, 1, "an unchanged preload is not asked again on reload");
    let st: Value = bridge_status(&sock).await;
    assert_eq!(st["upstream"]["reachable"], true, "{st}");
}
