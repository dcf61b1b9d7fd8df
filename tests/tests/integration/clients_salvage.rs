//! Tool-call salvage with real clients inside the bwrap sandbox, through bridge-guest:
//! the double's llama3.2:3b-like model prints its calls as text in each of the five
//! forms (named in the prompt), and the `ollama` Python package, the `openai` Python
//! package and the `ollama` npm package each get structured tool calls and no JSON in
//! the content. One sandbox run per language covers every form; the same runs go through
//! the quick start (`serve --listen … --upstream … --allow-model …`, no config file).

use bridge_tests::double::printed::Printed;
use bridge_tests::double::{Double, DoubleConfig, Script, ToolPlacement};
use bridge_tests::harness::{config, repo, Host};
use serde_json::{json, Value};

use super::clients::in_sandbox;
use bridge_tests::harness::python;

const MODEL: &str = "llama3.2:3b";

async fn printing() -> Double {
    let double = Double::start(DoubleConfig::default()).await;
    double.set_script(Script {
        tools: ToolPlacement::Printed(Printed::AskedFor),
        ..Script::default()
    });
    double
}

async fn setup() -> (Double, Host) {
    let double = printing().await;
    let sandbox = "models = [\"llama3.2:*\"]\nopenai_via_native = true";
    let host = Host::start(&config(&double.url(), &[("agent", sandbox)], "")).await;
    (double, host)
}

/// The quick start, no config file: salvage and the native path for OpenAI clients are
/// its defaults.
async fn quick_start() -> (Double, Host) {
    let double = printing().await;
    let up = double.url();
    let args = [
        "--listen",
        "unix:{dir}/agent/ollama.sock",
        "--upstream",
        &up,
        "--allow-model",
        "llama3.2:*",
    ];
    let host = Host::start_quick(tempfile::tempdir().unwrap(), &[], &args, &[]).await;
    (double, host)
}

fn two_calls() -> Value {
    json!([
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"name": "get_time", "arguments": {"timezone": "UTC"}},
    ])
}

/// What the model wrote before its calls, which stays content.
fn lead(form: Printed) -> &'static str {
    match form {
        Printed::Fenced => "I'll look that up for you.\n",
        _ => "",
    }
}

/// `got[form]` has the two calls and only the form's lead text as content.
fn assert_forms(got: &Value, client: &str) {
    for form in Printed::FORMS {
        let r = &got[form.name()];
        assert_eq!(r["calls"], two_calls(), "{client}, {form:?}: {r}");
        assert_eq!(r["content"], lead(form), "{client}, {form:?}: {r}");
    }
}

/// salvage.py (the `ollama` and `openai` Python packages, every form) in the sandbox.
async fn python_clients(host: &Host) {
    let script = repo().join("tests/clients/salvage.py");
    let v = in_sandbox(host, &[&python(), script.to_str().unwrap(), MODEL]).await;
    assert_forms(&v["ollama"], "ollama (Python)");
    assert_forms(&v["openai"], "openai (Python)");
    for form in Printed::FORMS {
        assert_eq!(
            v["openai"][form.name()]["finish_reason"],
            "tool_calls",
            "{form:?}: {v}"
        );
    }
}

/// salvage.mjs (the `ollama` npm package, every form) in the sandbox.
async fn ollama_js(host: &Host) {
    let script = repo().join("tests/clients/salvage.mjs");
    let v = in_sandbox(host, &["node", script.to_str().unwrap(), MODEL]).await;
    assert_forms(&v, "ollama (npm)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_get_printed_tool_calls_as_calls() {
    let (_double, host) = setup().await;
    python_clients(&host).await;
    let salvaged: Vec<Value> = host
        .audit_records()
        .iter()
        .map(|r| r["tool_calls_salvaged"].clone())
        .collect();
    assert_eq!(salvaged, vec![json!(2); 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_js_gets_printed_tool_calls_as_calls() {
    let (_double, host) = setup().await;
    ollama_js(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_python_clients_get_printed_tool_calls_as_calls() {
    let (double, host) = quick_start().await;
    python_clients(&host).await;
    // The OpenAI client's requests went through the native API, not Ollama's /v1.
    let paths: Vec<String> = double.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, vec!["/api/chat"; 10], "{paths:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_ollama_js_gets_printed_tool_calls_as_calls() {
    let (_double, host) = quick_start().await;
    ollama_js(&host).await;
}
