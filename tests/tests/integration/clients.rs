//! Real agent clients in a real sandbox: the bubblewrap recipe (deploy/bwrap/ollama-sandbox)
//! runs each client with no network but the bridged `127.0.0.1:11434`, against the test
//! double through bridge-host. The clients are installed by `scripts/test` (a venv in
//! tests/clients/.venv from requirements.txt, `npm ci` in tests/clients); a missing one
//! fails its test with the install command.

use bridge_tests::double::{Double, DoubleConfig};
use bridge_tests::harness::{
    bin, bin_dir, config, guest_bin, guest_env, json_output, python, repo, socket, Host,
};
use serde_json::{json, Value};

async fn setup() -> (Double, Host) {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(
        &double.url(),
        &[(
            "agent",
            "models = [\"qwen2.5:7b\", \"nomic-embed-text\"]\nopenai_via_native = true",
        )],
        "",
    ))
    .await;
    (double, host)
}

/// The bwrap recipe running COMMAND in sandbox "agent" of `host`, with `writable` (if
/// any) bound read-write (the sandbox's root is read-only and its /tmp private).
pub(crate) fn recipe(
    host: &Host,
    writable: Option<&std::path::Path>,
    command: &[&str],
) -> tokio::process::Command {
    let sock_dir = socket(host, "agent").parent().unwrap().to_owned();
    let mut recipe = tokio::process::Command::new("sh");
    let (k, v) = guest_env();
    recipe
        .env(k, v)
        .arg(repo().join("deploy/bwrap/ollama-sandbox"))
        .arg("-s")
        .arg(&sock_dir)
        .arg("-g")
        .arg(guest_bin())
        // The repository and the binaries may live under /tmp, which the sandbox hides.
        .arg("-r")
        .arg(repo())
        .arg("-r")
        .arg(bin_dir());
    if let Some(w) = writable {
        recipe.arg("-w").arg(w);
    }
    recipe.arg("--").args(command);
    recipe
}

/// Runs COMMAND through the bwrap recipe; returns its stdout as JSON.
pub(crate) async fn in_sandbox(host: &Host, command: &[&str]) -> Value {
    let mut recipe = recipe(host, None, command);
    json_output(&mut recipe, &format!("{command:?} in the sandbox"))
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bwrap_recipe_gives_the_agent_ollama_and_nothing_else() {
    let (double, host) = setup().await;
    let port = double.addr().port().to_string();
    let probe = bin("sandbox-probe");
    let v = in_sandbox(&host, &[probe.to_str().unwrap(), "--direct", &port]).await;
    assert_eq!(v["tags_status"], 200, "{v}");
    assert_eq!(
        v["models"],
        json!(["qwen2.5:7b", "nomic-embed-text:latest"]),
        "{v}"
    );
    assert_eq!(v["chat_done"], true, "{v}");
    assert_eq!(v["denied_status"], 403, "{v}");
    assert!(v["direct"].as_str().unwrap().starts_with("failed:"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_python_client_in_the_sandbox() {
    let (double, host) = setup().await;
    let script = repo().join("tests/clients/ollama_py.py");
    let v = in_sandbox(&host, &[&python(), script.to_str().unwrap()]).await;
    assert!(v["chat_chunks"].as_u64().unwrap() > 2, "streamed: {v}");
    assert!(
        v["chat_text"]
            .as_str()
            .unwrap()
            .contains("stream me a greeting"),
        "{v}"
    );
    assert_eq!(v["chat_done"], true);
    assert_eq!(
        v["tool_calls"],
        json!([{"name": "get_weather", "arguments": {"city": "Paris"}}])
    );
    assert_eq!(v["embeddings"], 2);
    assert_eq!(
        v["models"],
        json!(["nomic-embed-text:latest", "qwen2.5:7b"])
    );
    assert_eq!(v["denied"]["status"], 403, "{v}");
    let msg = v["denied"]["error"].as_str().unwrap();
    assert!(
        msg.starts_with(
            "ollama-bridge: model \"llama3.3:70b\" is not allowed for sandbox \"agent\""
        ),
        "{msg}"
    );
    // Nothing denied reached Ollama.
    assert!(double
        .requests()
        .iter()
        .all(|r| !String::from_utf8_lossy(&r.body).contains("llama3.3")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_js_client_in_the_sandbox() {
    let (_double, host) = setup().await;
    let script = repo().join("tests/clients/ollama_js.mjs");
    let v = in_sandbox(&host, &["node", script.to_str().unwrap()]).await;
    assert!(v["chunks"].as_u64().unwrap() > 2, "streamed: {v}");
    assert!(
        v["text"].as_str().unwrap().contains("stream from node"),
        "{v}"
    );
    assert_eq!(v["done"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_client_streams_tool_calls_in_the_sandbox() {
    let (_double, host) = setup().await;
    let script = repo().join("tests/clients/openai_tools.py");
    let v = in_sandbox(
        &host,
        &[
            &python(),
            script.to_str().unwrap(),
            "http://127.0.0.1:11434/v1",
        ],
    )
    .await;
    assert_eq!(v["finish_reason"], "tool_calls", "{v}");
    let calls = v["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{v}");
    assert_eq!(
        (calls[0]["index"].as_u64(), calls[0]["name"].as_str()),
        (Some(0), Some("get_weather"))
    );
    assert_eq!(calls[0]["arguments"], json!({"city": "Paris"}));
    assert_eq!(
        (calls[1]["index"].as_u64(), calls[1]["name"].as_str()),
        (Some(1), Some("get_time"))
    );
    assert_eq!(calls[1]["arguments"], json!({"timezone": "UTC"}));
}
