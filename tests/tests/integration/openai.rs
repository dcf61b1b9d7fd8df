//! OpenAI-compatible clients through `openai_via_native`: client → bridge-guest →
//! bridge-host → the double's native `/api/chat` and `/api/embed`, compared with the
//! same requests sent straight to the double's `/v1` layer, which loses streamed tool
//! calls as Ollama's does.

use std::os::unix::fs::PermissionsExt;

use bridge_tests::double::{Double, DoubleConfig, Script, ToolPlacement};
use bridge_tests::harness::{config, json_output, repo, require_root, socket, Guest, Host};
use bridge_tests::http::{next_data, post, send_tcp, sse_events};
use bridge_tests::oai::{
    assert_two_calls, chain, chat, content, deltas, finish_reason, passthrough, sandbox, send,
    tools, PINNED,
};
use serde_json::{json, Value};

use crate::privileges::{setpriv, setpriv_ids, user};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_tool_calls_arrive_wherever_ollama_puts_them() {
    let (double, _host, guest) = chain().await;
    let cases = [
        (ToolPlacement::Intermediate, None, 1),
        (ToolPlacement::Final, None, 1),
        (ToolPlacement::Split, None, 2),
        (ToolPlacement::Final, Some(7), 1),
        (ToolPlacement::Split, Some(1), 2),
    ];
    for (placement, fragment, call_events) in cases {
        let ctx = format!("{placement:?}, frames of {fragment:?} bytes");
        double.clear();
        double.set_script(Script {
            tools: placement,
            fragment,
            ..Script::default()
        });
        let (status, ct, body) = send(guest.addr, "/v1/chat/completions", &chat(true, true)).await;
        assert_eq!(status, 200, "{ctx}: {}", String::from_utf8_lossy(&body));
        assert_eq!(ct, "text/event-stream", "{ctx}");
        let events = sse_events(&body);
        assert_eq!(events.last(), Some(&json!("[DONE]")), "{ctx}");
        assert_eq!(
            events[0]["choices"][0]["delta"]["role"], "assistant",
            "{ctx}"
        );
        assert_eq!(events[0]["object"], "chat.completion.chunk", "{ctx}");
        // Content first, then the calls.
        assert_eq!(content(&events), "Let me check.", "{ctx}");
        let first_call = events
            .iter()
            .position(|e| e.pointer("/choices/0/delta/tool_calls").is_some())
            .expect("tool calls");
        let last_content = events
            .iter()
            .rposition(|e| e.pointer("/choices/0/delta/content").is_some())
            .expect("content");
        assert!(last_content < first_call, "{ctx}");
        let per_event = deltas(&events, "tool_calls");
        assert_eq!(per_event.len(), call_events, "{ctx}");
        let calls: Vec<Value> = per_event
            .iter()
            .flat_map(|c| c.as_array().unwrap().clone())
            .collect();
        assert_two_calls(&calls, &ctx);
        assert_eq!(
            finish_reason(&events).as_deref(),
            Some("tool_calls"),
            "{ctx}"
        );
        // What Ollama got: the native chat, streamed, with the tools and the pinned num_ctx.
        let got = double.requests();
        assert_eq!(got.len(), 1, "{ctx}");
        assert_eq!(got[0].path, "/api/chat", "{ctx}");
        let sent = got[0].json();
        assert_eq!(sent["stream"], true, "{ctx}");
        assert_eq!(sent["tools"], tools(), "{ctx}");
        assert_eq!(sent["options"]["num_ctx"], 8192, "{ctx}");
    }
}

#[tokio::test]
async fn sse_events_are_not_buffered() {
    let (double, _host, guest) = chain().await;
    double.set_script(Script {
        gated: true,
        text: Some("one two three".into()),
        ..Script::default()
    });
    let resp = send_tcp(guest.addr, post("/v1/chat/completions", &chat(true, false)))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut pending: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    // Native chunks: "one ", "two ", "three", final. The double writes chunk k+1 only
    // after we release it, which we do only once chunk k's event(s) reached us.
    for (k, want) in [(0u64, 1usize), (1, 1), (2, 1), (3, 2)] {
        let mut got = 0;
        while got < want {
            if let Some(p) = pending.windows(2).position(|w| w == b"\n\n") {
                let ev: Vec<u8> = pending.drain(..p + 2).collect();
                events.extend(sse_events(&ev));
                got += 1;
                continue;
            }
            let d = next_data(&mut body)
                .await
                .expect("event before the next chunk");
            pending.extend_from_slice(&d);
        }
        assert_eq!(double.emitted(), k + 1);
        double.release(1);
    }
    // The final chunk also produced [DONE]; then the stream ends.
    while let Some(d) = next_data(&mut body).await {
        pending.extend_from_slice(&d);
    }
    events.extend(sse_events(&pending));
    assert_eq!(content(&events), "one two three");
    assert_eq!(finish_reason(&events).as_deref(), Some("stop"));
    assert_eq!(events.last(), Some(&json!("[DONE]")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_non_streaming_and_audit() {
    let (double, host, guest) = chain().await;
    // include_usage: a usage chunk with empty choices just before [DONE].
    let mut req = chat(true, false);
    req["stream_options"] = json!({"include_usage": true});
    let (_, _, body) = send(guest.addr, "/v1/chat/completions", &req).await;
    let events = sse_events(&body);
    let n = events.len();
    assert_eq!(events[n - 1], "[DONE]");
    assert_eq!(events[n - 2]["choices"], json!([]));
    let words = "Hello from the double. You said: Weather and time in Paris?";
    let completion = words.split_whitespace().count();
    assert_eq!(
        events[n - 2]["usage"],
        json!({"prompt_tokens": 8, "completion_tokens": completion, "total_tokens": 8 + completion})
    );
    assert_eq!(content(&events), words);
    // Without include_usage: no usage chunk.
    let (_, _, body) = send(guest.addr, "/v1/chat/completions", &chat(true, false)).await;
    assert!(sse_events(&body).iter().all(|e| e.get("usage").is_none()));

    // Non-streaming, with tools: one chat.completion.
    let (status, ct, body) = send(guest.addr, "/v1/chat/completions", &chat(false, true)).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("application/json"), "{ct}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v["choices"][0]["message"]["content"], "Let me check.");
    let mut calls = v["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap()
        .clone();
    for (i, c) in calls.iter_mut().enumerate() {
        assert!(c.get("index").is_none(), "{c}");
        c["index"] = json!(i);
    }
    assert_two_calls(&calls, "non-streaming");
    assert_eq!(v["usage"]["prompt_tokens"], 8);
    // Non-streaming, cut by max_tokens.
    let mut req = chat(false, false);
    req["max_tokens"] = json!(2);
    let (_, _, body) = send(guest.addr, "/v1/chat/completions", &req).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from ");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(double.requests()[3].json()["options"]["num_predict"], 2);

    // Every record carries the num_ctx sent and Ollama's token counts, streamed or not.
    let audit = host.audit_records();
    assert_eq!(audit.len(), 4);
    for r in &audit {
        assert_eq!(r["path"], "/v1/chat/completions", "{r}");
        assert_eq!(r["endpoint"], "openai", "{r}");
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["reason"], Value::Null, "{r}");
        assert_eq!(r["num_ctx_requested"], Value::Null, "{r}");
        assert_eq!(r["num_ctx_sent"], 8192, "{r}");
        assert_eq!(r["prompt_tokens"], 8, "{r}");
    }
    assert_eq!(audit[1]["completion_tokens"], completion);
    assert_eq!(audit[2]["completion_tokens"], 5, "3 words + 2 calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_through_api_embed() {
    let (double, host, guest) = chain().await;
    let straight = json!({"model": "nomic-embed-text", "input": ["alpha beta", "gamma"]});
    let (_, _, b) = send(double.addr(), "/api/embed", &straight).await;
    let want = serde_json::from_slice::<Value>(&b).unwrap()["embeddings"].clone();
    double.clear();
    let req = json!({"model": "nomic-embed-text", "input": ["alpha beta", "gamma"]});
    let (status, _, body) = send(guest.addr, "/v1/embeddings", &req).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        json!({"object": "list", "data": [
            {"object": "embedding", "embedding": want[0], "index": 0},
            {"object": "embedding", "embedding": want[1], "index": 1}],
            "model": "nomic-embed-text", "usage": {"prompt_tokens": 3, "total_tokens": 3}})
    );
    assert_eq!(double.requests()[0].path, "/api/embed");
    // A single string, base64-encoded as the openai Python client asks by default.
    let req =
        json!({"model": "nomic-embed-text", "input": "alpha beta", "encoding_format": "base64"});
    let (_, _, body) = send(guest.addr, "/v1/embeddings", &req).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    let bytes: Vec<u8> = want[0]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|x| (x.as_f64().unwrap() as f32).to_le_bytes())
        .collect();
    assert_eq!(
        v["data"][0]["embedding"],
        protocol::openai::embed::base64(&bytes)
    );
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    let audit = host.audit_records();
    assert_eq!(audit[0]["prompt_tokens"], 3);
    assert_eq!(audit[1]["path"], "/v1/embeddings");
}

/// Runs `tests/clients/openai_tools.py BASE_URL` and returns what the client assembled.
/// (Without the `openai` module the script fails saying `python3 -m pip install openai`.)
async fn python_client(base_url: &str) -> Value {
    let script = repo().join("tests/clients/openai_tools.py");
    let mut run = tokio::process::Command::new(bridge_tests::harness::python());
    run.arg(&script).arg(base_url);
    json_output(&mut run, "the python client (python3)").await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_client_gets_both_streamed_tool_calls_only_through_the_bridge() {
    let double = Double::start(DoubleConfig::default()).await;
    let sandboxes = [("agent", sandbox()), ("plain", passthrough())];
    let sandboxes: Vec<(&str, &str)> = sandboxes.iter().map(|(n, b)| (*n, b.as_str())).collect();
    let host = Host::start(&config(&double.url(), &sandboxes, PINNED)).await;
    let guest = Guest::start(&socket(&host, "agent")).await;
    let plain = Guest::start(&socket(&host, "plain")).await;

    for placement in [
        ToolPlacement::Intermediate,
        ToolPlacement::Final,
        ToolPlacement::Split,
    ] {
        double.set_script(Script {
            tools: placement,
            ..Script::default()
        });
        let got = python_client(&format!("http://{}/v1", guest.addr)).await;
        let ctx = format!("through the bridge, calls {placement:?}: {got}");
        let calls = got["calls"].as_array().expect("calls");
        assert_eq!(calls.len(), 2, "{ctx}");
        assert_eq!(calls[0]["index"], 0, "{ctx}");
        assert_eq!(calls[0]["name"], "get_weather", "{ctx}");
        assert_eq!(calls[0]["arguments"], json!({"city": "Paris"}), "{ctx}");
        assert_eq!(calls[1]["index"], 1, "{ctx}");
        assert_eq!(calls[1]["name"], "get_time", "{ctx}");
        assert_eq!(calls[1]["arguments"], json!({"timezone": "UTC"}), "{ctx}");
        assert_ne!(calls[0]["id"], calls[1]["id"], "{ctx}");
        assert_eq!(got["finish_reason"], "tool_calls", "{ctx}");
        assert!(got["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{ctx}");
    }

    // The same client straight at the double's /v1 layer, and through a sandbox with
    // openai_via_native turned off (passed through to that layer): the calls are lost.
    double.set_script(Script::default());
    for (what, addr) in [
        ("straight to the double", double.addr()),
        ("plain sandbox", plain.addr),
    ] {
        let got = python_client(&format!("http://{addr}/v1")).await;
        assert_eq!(got["calls"], json!([]), "{what}: {got}");
        assert_eq!(got["finish_reason"], "stop", "{what}: {got}");
    }
    let paths: Vec<String> = double.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/api/chat",
            "/api/chat",
            "/api/chat",
            "/v1/chat/completions",
            "/v1/chat/completions"
        ]
    );
}

/// Issue 16: the quick start (`serve --listen --upstream --allow-model`, no file) serves
/// OpenAI clients through the native path too: the `openai` client, streamed, with
/// tools, gets both calls (Ollama's `/v1` layer, like the double's, loses them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_client_gets_streamed_tool_calls_through_the_quick_start() {
    // As nobody, so that the quick start's built-in paths (audit log) stay in the temp dir.
    require_root("setpriv starts the quick start as nobody");
    let double = Double::start(DoubleConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let state = dir.path().join("state").display().to_string();
    let (reuid, regid) = setpriv_ids(&user("nobody"));
    let wrapper = [setpriv(), reuid.as_str(), regid.as_str(), "--clear-groups"];
    let url = double.url();
    let args = [
        "--listen",
        "unix:{dir}/quick.sock",
        "--upstream",
        url.as_str(),
        "--allow-model",
        "qwen2.5:7b",
    ];
    let env = [
        ("HOME", state.as_str()),
        ("XDG_STATE_HOME", state.as_str()),
        ("XDG_RUNTIME_DIR", state.as_str()),
    ];
    let host = Host::start_quick(dir, &wrapper, &args, &env).await;
    let guest = Guest::start(&host.dir.path().join("quick.sock")).await;
    let got = python_client(&format!("http://{}/v1", guest.addr)).await;
    let calls = got["calls"].as_array().expect("calls");
    let names: Vec<&Value> = calls.iter().map(|c| &c["name"]).collect();
    assert_eq!(names, [&json!("get_weather"), &json!("get_time")], "{got}");
    assert_eq!(calls[0]["arguments"], json!({"city": "Paris"}), "{got}");
    assert_eq!(calls[1]["index"], 1, "{got}");
    assert_eq!(got["finish_reason"], "tool_calls", "{got}");
    let paths: Vec<String> = double.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/api/chat"]);
}
