//! The audit trail end to end, on real sockets: one correct record per request —
//! allowed, denied, failed upstream, or rejected by the HTTP parser — from two sandboxes
//! at once; `log_prompts`; and `bridge-host audit --summary` on the resulting log.
//! (When records are written, and what survives SIGKILL: `audit_durability`.)

use std::collections::HashSet;

use bridge_tests::double::{Double, DoubleConfig, Script};
use bridge_tests::harness::{config, dead_upstream, socket, Host};
use bridge_tests::http::{
    collect, ndjson, post, raw_unix_until_close, req, send_unix, GUARD, REQUEST_ID,
};
use bridge_tests::native::chat;
use protocol::audit::parse_rfc3339_millis;
use serde_json::{json, Value};

mod cases;
mod stdout;
mod summary;

use cases::{alpha_cases, beta_cases, Case, Want};
use summary::summary_matches;

const ALPHA: &str = "models = [\"qwen2.5:7b\", \"llama3.2:*\"]\nendpoints = [\"chat\", \"generate\", \"embed\", \"list\"]";
const BETA: &str = "models = [\"llama3.2:3b\"]\nendpoints = [\"chat\", \"list\"]";
const PIN: &str = "[model.\"qwen2.5:7b\"]\nnum_ctx = 8192\n";

/// The counts of Ollama's final chunk (or whole object) in an answer.
fn final_counts(body: &[u8]) -> (Option<u64>, Option<u64>) {
    let lines = ndjson(body);
    let v = lines.last().expect("a non-empty answer");
    assert_eq!(v["done"], true, "{v}");
    (v["prompt_eval_count"].as_u64(), v["eval_count"].as_u64())
}

async fn run(sandbox: &'static str, sock: std::path::PathBuf, case: Case) -> Option<Want> {
    match case {
        Case::Http(c) => {
            let resp = send_unix(&sock, req(c.method, c.path, c.body.clone()))
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", c.what));
            let (status, headers, body) = collect(resp).await;
            assert_eq!(
                status,
                c.status,
                "{}: {}",
                c.what,
                String::from_utf8_lossy(&body)
            );
            let id = headers[REQUEST_ID].to_str().unwrap().to_owned();
            let n = if c.read { c.body.len() as u64 } else { 0 };
            Some(Want {
                what: c.what,
                sandbox,
                id: Some(id),
                method: c.method,
                path: c.path,
                endpoint: c.endpoint,
                model: c.model,
                decision: c.decision,
                reason: c.reason,
                status,
                bytes_in: (n, n),
                bytes_out: body.len() as u64,
                tokens: if c.tokens {
                    final_counts(&body)
                } else {
                    (None, None)
                },
                num_ctx: c.num_ctx,
            })
        }
        Case::Raw(c) => {
            let (resp, all) = raw_unix_until_close(&sock, &c.bytes, c.close_write)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", c.what));
            let sent = resp.as_ref().map_or(0, |r| r.status);
            let want = c.status?;
            assert_eq!(sent, want, "{}: {}", c.what, String::from_utf8_lossy(&all));
            Some(Want {
                what: c.what,
                sandbox,
                id: None,
                method: c.method,
                path: c.path,
                endpoint: c.endpoint,
                model: None,
                decision: "deny",
                reason: Some(c.reason),
                status: sent,
                bytes_in: c.bytes_in,
                bytes_out: 0,
                tokens: (None, None),
                num_ctx: (None, None),
            })
        }
    }
}

fn check(want: &Want, r: &Value, t0: i64) {
    let w = want.what;
    let peer = json!({
        "uid": nix::unistd::getuid().as_raw(),
        "gid": nix::unistd::getgid().as_raw(),
        "pid": std::process::id(),
    });
    assert_eq!(r["sandbox"], want.sandbox, "{w}: {r}");
    assert_eq!(
        r["peer"], peer,
        "{w}: the kernel's view of this test process: {r}"
    );
    assert_eq!(r["method"], want.method, "{w}: {r}");
    assert_eq!(r["path"], want.path, "{w}: {r}");
    assert_eq!(r["endpoint"].as_str(), want.endpoint, "{w}: {r}");
    assert_eq!(r["model"].as_str(), want.model, "{w}: {r}");
    assert_eq!(r["decision"], want.decision, "{w}: {r}");
    assert_eq!(r["reason"].as_str(), want.reason, "{w}: {r}");
    assert_eq!(r["status"], want.status, "{w}: {r}");
    let bytes_in = r["bytes_in"].as_u64().unwrap();
    assert!(
        (want.bytes_in.0..=want.bytes_in.1).contains(&bytes_in),
        "{w}: bytes_in {bytes_in} not in {:?}: {r}",
        want.bytes_in
    );
    assert_eq!(r["bytes_out"], want.bytes_out, "{w}: {r}");
    assert_eq!(r["prompt_tokens"].as_u64(), want.tokens.0, "{w}: {r}");
    assert_eq!(r["completion_tokens"].as_u64(), want.tokens.1, "{w}: {r}");
    assert_eq!(r["num_ctx_requested"].as_u64(), want.num_ctx.0, "{w}: {r}");
    assert_eq!(r["num_ctx_sent"].as_u64(), want.num_ctx.1, "{w}: {r}");
    assert!(r["duration_ms"].is_u64(), "{w}: {r}");
    let ts = parse_rfc3339_millis(r["ts"].as_str().unwrap()).expect("RFC 3339 ts");
    assert!(ts >= t0 - 1000, "{w}: ts before the test: {r}");
    for key in ["prompt", "output", "output_truncated"] {
        assert!(r.get(key).is_none(), "{w}: {key} without log_prompts: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_correct_record_per_request_from_two_sandboxes_and_a_summary_of_them() {
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let double = Double::start(DoubleConfig::default()).await;
    // Streams longer than three chunks fail with Ollama's error line after the third.
    double.set_script(Script {
        error_after: Some(3),
        ..Script::default()
    });
    let host = Host::start(&config(
        &double.url(),
        &[("alpha", ALPHA), ("beta", BETA)],
        PIN,
    ))
    .await;
    let mut tasks = Vec::new();
    for _ in 0..2 {
        for (name, cases) in [("alpha", alpha_cases()), ("beta", beta_cases())] {
            for c in cases {
                tasks.push(tokio::spawn(run(name, socket(&host, name), c)));
            }
        }
    }
    let mut wants = Vec::new();
    for t in tasks {
        wants.extend(tokio::time::timeout(GUARD, t).await.unwrap().unwrap());
    }

    // Every answer has completed (or its connection closed): its record is written.
    let records = host.audit_records();
    let ids: HashSet<&str> = records
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), records.len(), "request ids are unique");
    let mut left: Vec<&Value> = records.iter().collect();
    // Those with an id first: the others are matched by their fields among the rest.
    wants.sort_by_key(|w| w.id.is_none());
    for w in &wants {
        let pos = match &w.id {
            Some(id) => left.iter().position(|r| r["request_id"] == id.as_str()),
            None => left.iter().position(|r| {
                r["sandbox"] == w.sandbox
                    && r["method"] == w.method
                    && r["path"] == w.path
                    && r["status"] == w.status
                    && r["reason"] == w.reason.unwrap()
            }),
        };
        let pos = pos.unwrap_or_else(|| panic!("{}: no record for {w:?}", w.what));
        check(w, left.remove(pos), t0);
    }
    assert!(left.is_empty(), "records of no request: {left:#?}");
    assert_eq!(records.len(), wants.len());

    summary_matches(&host.audit, &records);
}

#[tokio::test]
async fn failures_reaching_ollama_are_recorded_as_allowed_with_the_reason() {
    let host = Host::start(&config(&dead_upstream(), &[("alpha", ALPHA)], PIN)).await;
    let body = chat("qwen2.5:7b", json!({"stream": false}));
    let resp = send_unix(&socket(&host, "alpha"), post("/api/chat", &body))
        .await
        .unwrap();
    let (status, headers, out) = collect(resp).await;
    assert_eq!(status, 502);
    let records = host.audit_records();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["request_id"], headers[REQUEST_ID].to_str().unwrap());
    assert_eq!(r["decision"], "allow", "the policy allowed it: {r}");
    assert_eq!(r["reason"], "upstream_unreachable");
    assert_eq!(r["status"], 502);
    assert_eq!(r["bytes_in"], body.to_string().len());
    assert_eq!(r["bytes_out"], out.len());
    assert_eq!(r["num_ctx_sent"], 8192);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_prompts_records_the_forwarded_body_and_a_bounded_output() {
    let double = Double::start(DoubleConfig::default()).await;
    let cfg = config(&double.url(), &[("alpha", ALPHA)], PIN)
        .replace("[audit]\n", "[audit]\nlog_prompts = true\n");
    let host = Host::start(&cfg).await;
    let sock = socket(&host, "alpha");

    double.set_script(Script {
        text: Some("The answer is forty-two.".into()),
        ..Script::default()
    });
    let body = chat("qwen2.5:7b", json!({}));
    let (status, _, _) = collect(send_unix(&sock, post("/api/chat", &body)).await.unwrap()).await;
    assert_eq!(status, 200);
    let g = json!({"model": "llama3.2:3b", "prompt": "p", "stream": false});
    collect(send_unix(&sock, post("/api/generate", &g)).await.unwrap()).await;

    // An output over 64 KiB is cut at 64 KiB.
    let long = format!("{} tail", "w".repeat(70_000));
    double.set_script(Script {
        text: Some(long),
        ..Script::default()
    });
    collect(send_unix(&sock, post("/api/chat", &body)).await.unwrap()).await;
    // A denied request's prompt is not forwarded, so not recorded.
    collect(
        send_unix(&sock, post("/api/chat", &chat("llama3.3:70b", json!({}))))
            .await
            .unwrap(),
    )
    .await;

    let records = host.audit_records();
    let forwarded = double.requests();
    assert_eq!(records.len(), 4);
    assert_eq!(
        records[0]["prompt"],
        forwarded[0].json(),
        "the body as forwarded"
    );
    assert_eq!(records[0]["prompt"]["options"]["num_ctx"], 8192);
    assert_eq!(records[0]["output"], "The answer is forty-two.");
    assert!(records[0].get("output_truncated").is_none());
    assert_eq!(records[1]["prompt"], forwarded[1].json());
    assert_eq!(records[1]["output"], "The answer is forty-two.");
    let out = records[2]["output"].as_str().unwrap();
    assert_eq!(out.len(), 64 * 1024);
    assert!(out.bytes().all(|b| b == b'w'));
    assert_eq!(records[2]["output_truncated"], true);
    assert!(records[3].get("prompt").is_none() && records[3].get("output").is_none());
}
