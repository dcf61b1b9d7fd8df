//! `/v1/completions` through `openai_via_native`: served through Ollama's `/api/generate`
//! with the model's num_ctx policy, streamed and not, errors in OpenAI's format, and the
//! real `openai` Python client.

use bridge_tests::double::{Double, DoubleConfig, Script};
use bridge_tests::harness::{config, json_output, repo, socket, Guest, Host};
use bridge_tests::http::sse_events;
use bridge_tests::oai::{chain, sandbox, send, PINNED};
use serde_json::{json, Value};

/// A prompt of `words` words and a question (`words + 3` tokens for the double):
/// longer than the double's default context (4096) when `words` is 6000.
fn long_prompt(words: usize) -> String {
    format!("{}Continue the story:", "word ".repeat(words))
}

/// The text of a stream's `text_completion` chunks, concatenated.
fn completion_text(events: &[Value]) -> String {
    events
        .iter()
        .filter_map(|e| e.pointer("/choices/0/text")?.as_str())
        .collect()
}

/// Issue 15 item 3: with `openai_via_native`, `/v1/completions` goes to Ollama's
/// `/api/generate` with the model's num_ctx policy (pinned 8192 here), streamed and not,
/// and comes back in OpenAI's `text_completion` shape with usage; the record keeps the
/// client's path and gets the num_ctx sent and Ollama's token counts. Straight at the
/// double's own `/v1/completions` (Ollama's layer) the same prompt is cut at 4096.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_go_through_api_generate_with_the_num_ctx_policy() {
    let (double, host, guest) = chain().await;
    let prompt = long_prompt(6000);
    let answer = "Generated from: word word word word word word word word";
    let want_usage = json!({"prompt_tokens": 6003, "completion_tokens": 10, "total_tokens": 6013});

    // Streamed, with usage and every sampling field Ollama's layer reads.
    let req = json!({
        "model": "qwen2.5:7b", "prompt": prompt, "suffix": " The end.",
        "stream": true, "stream_options": {"include_usage": true},
        "max_tokens": 50, "stop": ["THE END"], "temperature": 0.2, "top_p": 0.5, "seed": 7,
        "frequency_penalty": 0.1, "presence_penalty": 0.2, "n": 1, "user": "ignored",
    });
    let (status, ct, body) = send(guest.addr, "/v1/completions", &req).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(ct, "text/event-stream");
    let events = sse_events(&body);
    let n = events.len();
    assert_eq!(events[n - 1], "[DONE]");
    assert_eq!(events[n - 2]["choices"], json!([]));
    assert_eq!(events[n - 2]["usage"], want_usage);
    assert_eq!(events[n - 3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(completion_text(&events), answer);
    let id = events[0]["id"].as_str().unwrap();
    assert!(id.starts_with("cmpl-"), "{id}");
    for e in &events[..n - 1] {
        assert_eq!(e["object"], "text_completion", "{e}");
        assert_eq!(e["id"], id, "{e}");
        assert_eq!(e["model"], "qwen2.5:7b", "{e}");
    }
    for e in &events[..n - 3] {
        assert_eq!(e["choices"][0]["finish_reason"], Value::Null, "{e}");
    }
    // What Ollama got: the native generate, streamed, with the pinned num_ctx.
    let got = double.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/api/generate");
    assert_eq!(
        got[0].json(),
        json!({"model": "qwen2.5:7b", "prompt": prompt, "stream": true, "suffix": " The end.",
               "options": {"num_predict": 50, "temperature": 0.2, "top_p": 0.5, "seed": 7,
                           "frequency_penalty": 0.1, "presence_penalty": 0.2,
                           "stop": ["THE END"], "num_ctx": 8192}})
    );

    // Not streamed: one text_completion.
    let req = json!({"model": "qwen2.5:7b", "prompt": prompt});
    let (status, ct, body) = send(guest.addr, "/v1/completions", &req).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(ct.starts_with("application/json"), "{ct}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "qwen2.5:7b");
    assert_eq!(v["choices"][0]["text"], answer);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"], want_usage);
    let sent = double.requests()[1].json();
    assert_eq!(double.requests()[1].path, "/api/generate");
    assert_eq!(sent["stream"], true, "the bridge reads Ollama streamed");
    assert_eq!(sent["options"]["num_ctx"], 8192);

    // Cut by max_tokens: finish_reason "length"; echo gives the prompt back first.
    let req = json!({"model": "qwen2.5:7b", "prompt": "Once upon", "max_tokens": 2, "echo": true});
    let (_, _, body) = send(guest.addr, "/v1/completions", &req).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["choices"][0]["text"], "Once uponGenerated from: ");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(double.requests()[2].json()["options"]["num_predict"], 2);

    // Every record: the client's path, the num_ctx sent, Ollama's token counts.
    let audit = host.audit_records();
    assert_eq!(audit.len(), 3);
    for r in &audit {
        assert_eq!(r["path"], "/v1/completions", "{r}");
        assert_eq!(r["endpoint"], "openai", "{r}");
        assert_eq!(r["model"], "qwen2.5:7b", "{r}");
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["reason"], Value::Null, "{r}");
        assert_eq!(r["num_ctx_requested"], Value::Null, "{r}");
        assert_eq!(r["num_ctx_sent"], 8192, "{r}");
    }
    assert_eq!(
        (&audit[0]["prompt_tokens"], &audit[0]["completion_tokens"]),
        (&json!(6003), &json!(10))
    );
    assert_eq!(
        (&audit[1]["prompt_tokens"], &audit[1]["completion_tokens"]),
        (&json!(6003), &json!(10))
    );
    assert_eq!(audit[2]["completion_tokens"], 2);

    // Ollama's own /v1/completions cannot carry num_ctx: the prompt is cut at 4096.
    let (status, _, body) = send(double.addr(), "/v1/completions", &req_for(&prompt)).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 4096);
}

fn req_for(prompt: &str) -> Value {
    json!({"model": "qwen2.5:7b", "prompt": prompt})
}

/// Failures of `/v1/completions` through `/api/generate`, each in OpenAI's error format:
/// a request the bridge cannot translate (400, nothing reaches Ollama), a model Ollama
/// lacks (its 404), Ollama's error line mid-stream (one error event) or mid-answer (500),
/// a silent Ollama (the idle timeout's error event, 504 when not streamed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_failures_are_openai_errors() {
    let double = Double::start(DoubleConfig::default()).await;
    let cfg = config(&double.url(), &[("agent", &sandbox())], PINNED)
        .replace("idle_timeout = \"30s\"", "idle_timeout = \"1s\"");
    let host = Host::start(&cfg).await;
    let guest = Guest::start(&socket(&host, "agent")).await;
    let ask = |stream: bool| json!({"model": "qwen2.5:7b", "prompt": "Tell me", "stream": stream});

    for (body, want) in [
        (
            json!({"model": "qwen2.5:7b", "prompt": ["a", "b"]}),
            "\"prompt\": must be one string",
        ),
        (
            json!({"model": "qwen2.5:7b", "prompt": "x", "max_tokens": "5"}),
            "\"max_tokens\" must be an integer",
        ),
        (
            json!({"model": "qwen2.5:7b", "prompt": "x", "stop": 3}),
            "\"stop\" must be",
        ),
    ] {
        let (status, _, b) = send(guest.addr, "/v1/completions", &body).await;
        assert_eq!(status, 400, "{body}");
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with("ollama-bridge: ") && msg.contains(want),
            "{msg}"
        );
    }
    assert!(double.requests().is_empty());

    // Allowed by the policy (llama3.2:*), unknown to Ollama: its 404, in OpenAI's shape.
    let (status, _, b) = send(
        guest.addr,
        "/v1/completions",
        &json!({"model": "llama3.2:1b", "prompt": "x", "stream": true}),
    )
    .await;
    assert_eq!(status, 404);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["error"]["type"], "not_found_error");
    assert_eq!(v["error"]["message"], "model 'llama3.2:1b' not found");

    // Ollama's error line after two chunks.
    double.set_script(Script {
        error_after: Some(2),
        ..Script::default()
    });
    let (status, _, b) = send(guest.addr, "/v1/completions", &ask(true)).await;
    assert_eq!(status, 200);
    let events = sse_events(&b);
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(completion_text(&events), "Generated from: ");
    assert_eq!(events[2]["error"]["type"], "api_error");
    assert!(events[2]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unexpected EOF"));
    let (status, _, b) = send(guest.addr, "/v1/completions", &ask(false)).await;
    assert_eq!(status, 500);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unexpected EOF"),
        "{v}"
    );

    // A silent Ollama.
    double.set_script(Script {
        stall_after: Some(1),
        ..Script::default()
    });
    let (status, _, b) = send(guest.addr, "/v1/completions", &ask(true)).await;
    assert_eq!(status, 200);
    let events = sse_events(&b);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["error"]["code"], "upstream_timeout");
    let (status, _, _) = send(guest.addr, "/v1/completions", &ask(false)).await;
    assert_eq!(status, 504);

    let reasons: Vec<Value> = host
        .audit_records()
        .iter()
        .map(|r| r["reason"].clone())
        .collect();
    assert_eq!(
        reasons,
        [
            json!("bad_request"),
            json!("bad_request"),
            json!("bad_request"),
            json!("upstream_error"),
            json!("upstream_error"),
            json!("upstream_error"),
            json!("upstream_timeout"),
            json!("upstream_timeout"),
        ]
    );
    let paths: Vec<String> = double.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/api/generate"; 5]);
}

/// Runs `tests/clients/openai_completions.py BASE_URL` (the `openai` Python client).
async fn python_completions(base_url: &str) -> Value {
    let script = repo().join("tests/clients/openai_completions.py");
    let mut run = tokio::process::Command::new(bridge_tests::harness::python());
    run.arg(&script).arg(base_url);
    json_output(&mut run, "the python client (python3)").await.0
}

/// The `openai` Python client's completions, streamed and not, parse through the bridge,
/// and only through the bridge does the 6000-word prompt keep its length (num_ctx 8192);
/// straight at Ollama's layer (the double's) it is cut at the default 4096.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_client_completions_keep_the_num_ctx_policy() {
    let (double, host, guest) = chain().await;
    let got = python_completions(&format!("http://{}/v1", guest.addr)).await;
    let answer = "Generated from: word word word word word word word word";
    let want_usage = json!({"prompt_tokens": 6003, "completion_tokens": 10, "total_tokens": 6013});
    let s = &got["streamed"];
    assert_eq!(s["text"], answer, "{got}");
    assert_eq!(s["finish_reason"], "stop", "{got}");
    assert_eq!(s["usage"], want_usage, "{got}");
    assert_eq!(s["objects"], json!(["text_completion"]), "{got}");
    assert_eq!(s["ids"], 1, "{got}");
    let w = &got["whole"];
    assert_eq!(w["text"], answer, "{got}");
    assert_eq!(w["finish_reason"], "stop", "{got}");
    assert_eq!(w["usage"], want_usage, "{got}");
    assert_eq!(w["object"], "text_completion", "{got}");
    assert_eq!(
        got["short"],
        json!({"text": "Generated from: ", "finish_reason": "length"})
    );
    let got_reqs = double.requests();
    assert_eq!(got_reqs.len(), 3);
    for r in &got_reqs {
        assert_eq!(r.path, "/api/generate");
        assert_eq!(r.json()["options"]["num_ctx"], 8192);
    }
    assert_eq!(got_reqs[0].json()["options"]["stop"], json!(["THE END"]));
    assert_eq!(got_reqs[1].json()["options"]["seed"], 7);
    let audit = host.audit_records();
    assert!(audit
        .iter()
        .all(|r| r["num_ctx_sent"] == 8192 && r["path"] == "/v1/completions"));

    // The same client straight at Ollama's own layer: parsed too, but the prompt is cut.
    double.clear();
    let straight = python_completions(&format!("http://{}/v1", double.addr())).await;
    assert_eq!(
        straight["streamed"]["usage"]["prompt_tokens"], 4096,
        "{straight}"
    );
    assert_eq!(
        straight["whole"]["usage"]["prompt_tokens"], 4096,
        "{straight}"
    );
    assert_eq!(double.requests()[0].path, "/v1/completions");
}
