//! Token budgets per sandbox over real sockets: a small `tokens_per_hour` is spent by the
//! tokens the double reports, then model requests (native and OpenAI) get 429
//! `budget_exhausted` with `Retry-After`, while listings still work and another sandbox
//! is served; the spent budget survives a restart of bridge-host (its state file); a
//! stream the client aborts is charged an estimate; after the privilege drop the state
//! file is written as the service user, or a warning says why not. No sleeps: every
//! wait is for an event.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use bridge_tests::double::{Double, DoubleConfig, Script};
use bridge_tests::harness::{bin, config, require_root, socket, Host};
use bridge_tests::http::{bridge_status, collect, post, req, send_unix, GUARD};
use bridge_tests::native::chat_request;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BUDGET: u64 = 40;

fn budget_config(upstream: &str) -> String {
    config(
        upstream,
        &[
            ("capped", &format!("tokens_per_hour = {BUDGET}")),
            ("free", ""),
        ],
        "",
    )
}

/// One non-streamed chat on `sock`: its status, `Retry-After`, and body.
async fn chat_on(sock: &std::path::Path) -> (u16, Option<u64>, Value) {
    let resp = send_unix(sock, chat_request("qwen2.5:7b", json!({"stream": false})))
        .await
        .unwrap();
    let (s, h, b) = collect(resp).await;
    let retry = h
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (s, retry, serde_json::from_slice(&b).unwrap())
}

/// The answer is a budget refusal naming the hour budget, with an honest Retry-After.
fn assert_refused(status: u16, retry: Option<u64>, body: &Value) {
    assert_eq!(status, 429, "{body}");
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(msg.contains("token budget"), "{msg}");
    assert!(
        msg.contains(&format!("{BUDGET} tokens per hour (tokens_per_hour)")),
        "{msg}"
    );
    assert!(msg.contains("refills at"), "{msg}");
    let wait = retry.expect("Retry-After");
    assert!((1..=3600).contains(&wait), "{wait}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_refuses_one_sandbox_keeps_listings_and_survives_a_restart() {
    let double = Double::start(DoubleConfig::default()).await;
    let text = budget_config(&double.url());
    let host = Host::start(&text).await;
    let capped = socket(&host, "capped");

    // Admitted while the counted tokens are under the budget; the first request after
    // they pass it is refused.
    let mut used = 0;
    let (status, retry, body) = loop {
        assert!(used < 10 * BUDGET, "never refused after {used} tokens");
        let (s, retry, body) = chat_on(&capped).await;
        if s != 200 {
            break (s, retry, body);
        }
        assert!(used < BUDGET, "admitted at {used} ≥ {BUDGET} tokens used");
        used += body["prompt_eval_count"].as_u64().unwrap() + body["eval_count"].as_u64().unwrap();
    };
    assert!(used >= BUDGET, "refused at {used} < {BUDGET}: {body}");
    assert_refused(status, retry, &body);
    let refused: Vec<Value> = host
        .audit_records()
        .into_iter()
        .filter(|r| r["reason"] == "budget_exhausted")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        (
            &refused[0]["sandbox"],
            &refused[0]["status"],
            &refused[0]["decision"]
        ),
        (&json!("capped"), &json!(429), &json!("deny"))
    );
    // The counts went through the record, not an estimate.
    assert!(host
        .audit_records()
        .iter()
        .all(|r| r.get("tokens_estimated").is_none()));

    // The OpenAI form is a model request too; listings and the version are not.
    let oai = json!({"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "hi"}]});
    let (s, h, b) = collect(
        send_unix(&capped, post("/v1/chat/completions", &oai))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 429);
    assert!(h.contains_key("retry-after"));
    let b: Value = serde_json::from_slice(&b).unwrap();
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens_per_hour"),
        "{b}"
    );
    for path in ["/api/tags", "/api/version", "/v1/models"] {
        let (s, _, _) = collect(send_unix(&capped, req("GET", path, "")).await.unwrap()).await;
        assert_eq!(s, 200, "{path}");
    }
    // Another sandbox on the same bridge is served.
    let free = socket(&host, "free");
    let (s, _, body) = chat_on(&free).await;
    assert_eq!(s, 200, "{body}");
    // Its usage is counted too (without a budget): an embedding costs its prompt count.
    let before = bridge_status(&free).await["tokens"]["hour"]["used"].as_u64();
    let embed = json!({"model": "nomic-embed-text", "input": ["alpha beta", "gamma"]});
    let (s, _, b) = collect(send_unix(&free, post("/api/embed", &embed)).await.unwrap()).await;
    assert_eq!(s, 200);
    let n = serde_json::from_slice::<Value>(&b).unwrap()["prompt_eval_count"]
        .as_u64()
        .unwrap();
    let after = bridge_status(&free).await["tokens"]["hour"]["used"].as_u64();
    assert_eq!(after, before.map(|u| u + n));
    let rec = host
        .audit_records()
        .into_iter()
        .find(|r| r["path"] == "/api/embed")
        .unwrap();
    assert_eq!(rec["prompt_tokens"], json!(n), "{rec}");
    assert_eq!(rec.get("tokens_estimated"), None, "{rec}");

    // The status says what was used, that nothing is left and when it refills.
    let st = bridge_status(&capped).await;
    let hour = &st["tokens"]["hour"];
    assert_eq!(
        (&hour["budget"], &hour["used"], &hour["left"]),
        (&json!(BUDGET), &json!(used), &json!(0)),
        "{st}"
    );
    assert!(
        hour["refills_in_s"].as_u64().is_some_and(|s| s >= 1),
        "{st}"
    );
    assert!(hour["refills_at"].is_string(), "{st}");
    assert_eq!(st["tokens"]["day"]["budget"], Value::Null, "{st}");
    // The operator's command shows it under the sandbox (and nothing under the other).
    let out = tokio::process::Command::new(bin("bridge-host"))
        .args(["status", "--config"])
        .arg(&host.config)
        .output()
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    let row = lines
        .iter()
        .position(|l| l.starts_with("capped "))
        .unwrap_or_else(|| panic!("{table}"));
    let tokens = lines[row + 1].trim();
    assert!(
        tokens.starts_with(&format!(
            "tokens: per hour {used}/{BUDGET} (SPENT, refills at "
        )),
        "{table}"
    );
    assert_eq!(table.matches("tokens:").count(), 1, "{table}");

    // Stopped and started again with the same configuration: still spent.
    let mut host = host;
    host.signal(nix::sys::signal::Signal::SIGTERM);
    let exit = tokio::time::timeout(GUARD, host.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{}", host.log());
    assert!(host.path("audit.budgets.json").exists());
    let Host { dir, .. } = host;
    let host = Host::start_in(dir, &text, &[]).await;
    let (s, retry, body) = chat_on(&socket(&host, "capped")).await;
    assert_refused(s, retry, &body);
    let st = bridge_status(&socket(&host, "capped")).await;
    assert_eq!(st["tokens"]["hour"]["used"], json!(used), "{st}");
    let (s, _, body) = chat_on(&socket(&host, "free")).await;
    assert_eq!(s, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_stream_is_charged_an_estimate() {
    let double = Double::start(DoubleConfig {
        script: Script {
            gated: true,
            ..Script::default()
        },
        ..DoubleConfig::default()
    })
    .await;
    let host = Host::start(&config(
        &double.url(),
        &[("capped", "tokens_per_hour = 10")],
        "",
    ))
    .await;
    let sock = socket(&host, "capped");

    // A streamed chat whose client leaves after the first chunk, before the counts.
    let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let body = serde_json::to_vec(&json!({
        "model": "qwen2.5:7b",
        "messages": [{"role": "user", "content": "a long prompt that is worth quite a few tokens of the budget"}],
    }))
    .unwrap();
    let head = format!(
        "POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("\"done\":false") {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(GUARD, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "the first chunk came: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    // Shut down, not only closed: a child another test forks at this moment holds a copy
    // of the descriptor until it execs, and the socket stays open while it does (CI saw
    // the whole stream delivered into the buffer once).
    s.into_std()
        .unwrap()
        .shutdown(std::net::Shutdown::Both)
        .unwrap();
    // The rest goes to a closed connection: the bridge sees the client gone.
    double.release(10_000);
    let r = tokio::time::timeout(GUARD, async {
        loop {
            let found = host
                .audit_records()
                .into_iter()
                .find(|r| r["path"] == "/api/chat");
            if let Some(r) = found {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the record of the aborted stream");
    assert_eq!(r["reason"], "client_closed", "{r}");
    assert_eq!(r["prompt_tokens"], Value::Null, "{r}");
    let bytes_in = r["bytes_in"].as_u64().unwrap();
    let charged = r["tokens_estimated"].as_u64().expect("an estimate");
    // A quarter of the body's bytes for the prompt, a token per chunk seen (≥ 1).
    assert!(charged > bytes_in.div_ceil(4), "{r}");
    let st = bridge_status(&sock).await;
    assert_eq!(st["tokens"]["hour"]["used"], json!(charged), "{st}");
    // The estimate spent the budget: aborting did not dodge it.
    let (s, retry, body) = chat_on(&sock).await;
    assert_eq!(s, 429, "{body}");
    assert!(retry.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_privilege_drop_the_state_file_is_the_service_users_or_a_warning() {
    require_root("it starts bridge-host as root, dropping to nobody");
    let double = Double::start(DoubleConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // The service user must be able to reach the audit directories.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = |log: &str| {
        config(
            &double.url(),
            &[("capped", "tokens_per_hour = 1000")],
            "[privileges]\nuser = \"nobody\"\n",
        )
        .replace("{dir}/audit.jsonl", &format!("{{dir}}/{log}/audit.jsonl"))
    };
    // A directory the daemon creates is handed to the service user: the first write,
    // right after the drop, succeeds.
    let host = Host::start_in(dir, &text("log"), &[]).await;
    let state = host.path("log/audit.budgets.json");
    tokio::time::timeout(GUARD, async {
        while !state.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the state file is written after the drop");
    assert_eq!(std::fs::metadata(&state).unwrap().uid(), 65534);
    let mut host = host;
    host.signal(nix::sys::signal::Signal::SIGTERM);
    let exit = tokio::time::timeout(GUARD, host.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{}", host.log());
    let Host { dir, .. } = host;

    // A directory only root may write to: a warning at start, and still serving.
    std::fs::create_dir(dir.path().join("rootlog")).unwrap();
    std::fs::set_permissions(
        dir.path().join("rootlog"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(dir.path().join("rootlog/audit.jsonl"), b"").unwrap();
    std::fs::set_permissions(
        dir.path().join("rootlog/audit.jsonl"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let host = Host::start_in(dir, &text("rootlog"), &[]).await;
    let warn = host.wait_log("cannot write the token budget state").await;
    assert!(
        warn.contains("budgets will not survive a restart"),
        "{warn}"
    );
    assert!(warn.contains("runs as user nobody"), "{warn}");
    let (s, _, body) = chat_on(&socket(&host, "capped")).await;
    assert_eq!(s, 200, "{body}");
}
