//! The audit trail end to end, on real sockets: one correct record per request —
//! allowed, denied, failed upstream, or rejected by the HTTP parser — from two sandboxes
//! at once; `log_prompts`; and `bridge-host audit --summary` on the resulting log.
//! (When records are written, and what survives SIGKILL: `audit_durability.rs`.)

use std::collections::{BTreeMap, HashSet};
use std::process::Command;

use bridge_tests::double::{Double, DoubleConfig, Script};
use bridge_tests::harness::{bin, config, socket, Host};
use bridge_tests::http::{collect, post, raw_unix_until_close, req, send_unix, GUARD, REQUEST_ID};
use protocol::audit::parse_rfc3339_millis;
use serde_json::{json, Value};

const ALPHA: &str = "models = [\"qwen2.5:7b\", \"llama3.2:*\"]\nendpoints = [\"chat\", \"generate\", \"embed\", \"list\"]";
const BETA: &str = "models = [\"llama3.2:3b\"]\nendpoints = [\"chat\", \"list\"]";
const PIN: &str = "[model.\"qwen2.5:7b\"]\nnum_ctx = 8192\n";

/// What one request must have left in the log.
#[derive(Debug, Clone)]
struct Want {
    what: &'static str,
    sandbox: &'static str,
    /// From the response's `x-ollama-bridge-request-id` (none when hyper answered).
    id: Option<String>,
    method: &'static str,
    path: &'static str,
    endpoint: Option<&'static str>,
    model: Option<&'static str>,
    decision: &'static str,
    reason: Option<&'static str>,
    status: u16,
    bytes_in: (u64, u64),
    bytes_out: u64,
    tokens: (Option<u64>, Option<u64>),
    num_ctx: (Option<u64>, Option<u64>),
}

/// A request through the service.
struct Http {
    what: &'static str,
    method: &'static str,
    path: &'static str,
    body: String,
    /// Is the body read (and counted in `bytes_in`) before the answer?
    read: bool,
    endpoint: Option<&'static str>,
    model: Option<&'static str>,
    decision: &'static str,
    reason: Option<&'static str>,
    status: u16,
    /// Does the answer carry Ollama's final chunk with token counts?
    tokens: bool,
    num_ctx: (Option<u64>, Option<u64>),
}

/// Raw bytes, for what hyper rejects itself.
struct Raw {
    what: &'static str,
    bytes: Vec<u8>,
    close_write: bool,
    method: &'static str,
    path: &'static str,
    endpoint: Option<&'static str>,
    reason: &'static str,
    /// What hyper answers (0: nothing); None: no record expected at all.
    status: Option<u16>,
    bytes_in: (u64, u64),
}

enum Case {
    Http(Http),
    Raw(Raw),
}

#[allow(clippy::too_many_arguments)]
fn http(
    what: &'static str,
    method: &'static str,
    path: &'static str,
    body: Value,
    read: bool,
    endpoint: Option<&'static str>,
    model: Option<&'static str>,
    outcome: (&'static str, Option<&'static str>, u16),
    tokens: bool,
    num_ctx: (Option<u64>, Option<u64>),
) -> Case {
    let body = match body {
        Value::Null => String::new(),
        Value::String(s) => s,
        v => v.to_string(),
    };
    let (decision, reason, status) = outcome;
    Case::Http(Http {
        what,
        method,
        path,
        body,
        read,
        endpoint,
        model,
        decision,
        reason,
        status,
        tokens,
        num_ctx,
    })
}

fn raw(
    what: &'static str,
    bytes: &[u8],
    close_write: bool,
    line: (&'static str, &'static str, Option<&'static str>),
    status: Option<u16>,
    reason: &'static str,
) -> Case {
    Case::Raw(Raw {
        what,
        bytes: bytes.to_vec(),
        close_write,
        method: line.0,
        path: line.1,
        endpoint: line.2,
        reason,
        status,
        bytes_in: (bytes.len() as u64, bytes.len() as u64),
    })
}

fn chat(model: &str, extra: Value) -> Value {
    let mut v = json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

const ALLOW_OK: (&str, Option<&str>, u16) = ("allow", None, 200);

fn alpha_cases() -> Vec<Case> {
    let small = json!({"options": {"num_predict": 2}});
    let mut big_header = b"GET /api/tags HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big_header.extend(vec![b'a'; 300_000]);
    big_header.extend_from_slice(b"\r\n\r\n");
    let mut cases = vec![
        http("chat stream, num_ctx pinned", "POST", "/api/chat",
            chat("qwen2.5:7b", json!({"options": {"num_ctx": 2048, "num_predict": 2}})), true,
            Some("chat"), Some("qwen2.5:7b"), ALLOW_OK, true, (Some(2048), Some(8192))),
        http("chat stream:false", "POST", "/api/chat",
            chat("qwen2.5:7b", json!({"stream": false})), true,
            Some("chat"), Some("qwen2.5:7b"), ALLOW_OK, true, (None, Some(8192))),
        http("generate stream", "POST", "/api/generate",
            json!({"model": "llama3.2:3b", "prompt": "write", "options": {"num_predict": 2}}), true,
            Some("generate"), Some("llama3.2:3b"), ALLOW_OK, true, (None, None)),
        http("tags", "GET", "/api/tags", Value::Null, true,
            Some("list"), None, ALLOW_OK, false, (None, None)),
        http("HEAD tags", "HEAD", "/api/tags", Value::Null, true,
            Some("list"), None, ALLOW_OK, false, (None, None)),
        http("model denied", "POST", "/api/chat", chat("llama3.3:70b", small.clone()), true,
            Some("chat"), Some("llama3.3:70b"), ("deny", Some("model_not_allowed"), 403), false, (None, None)),
        http("endpoint denied", "POST", "/api/pull", json!({"model": "qwen2.5:7b"}), false,
            Some("manage"), None, ("deny", Some("endpoint_not_allowed"), 403), false, (None, None)),
        http("bad json", "POST", "/api/chat", json!("{bad"), true,
            Some("chat"), None, ("deny", Some("bad_request"), 400), false, (None, None)),
        http("unknown route", "GET", "/api/nope", Value::Null, true,
            None, None, ("deny", Some("not_found"), 404), false, (None, None)),
        http("Ollama 404", "POST", "/api/chat", chat("llama3.2:1b", json!({"stream": false})), true,
            Some("chat"), Some("llama3.2:1b"), ("allow", Some("upstream_error"), 404), false, (None, None)),
        http("Ollama error line mid-stream", "POST", "/api/chat",
            chat("qwen2.5:7b", json!({"messages": [{"role": "user", "content": "tell me a long story please"}]})), true,
            Some("chat"), Some("qwen2.5:7b"), ("allow", Some("upstream_error"), 200), false, (None, Some(8192))),
        raw("garbage request line", b"GARBAGE\r\n\r\n", false,
            ("-", "-", None), Some(400), "bad_request"),
        raw("conflicting Content-Length", b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", false,
            ("POST", "/api/chat", Some("chat")), Some(400), "bad_request"),
        raw("head cut off", b"POST /api/chat HTTP/1.1\r\nHost: x\r\n", true,
            ("POST", "/api/chat", Some("chat")), Some(0), "client_closed"),
        raw("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false,
            ("PRI", "*", None), Some(0), "bad_request"),
        raw("connection without a byte", b"", true, ("-", "-", None), None, "-"),
    ];
    let mut huge = raw(
        "headers too large",
        &big_header,
        false,
        ("GET", "/api/tags", Some("list")),
        Some(431),
        "too_large",
    );
    if let Case::Raw(r) = &mut huge {
        // hyper stops reading once its 64 KiB buffer is full.
        r.bytes_in = (64 * 1024, big_header.len() as u64);
    }
    cases.push(huge);
    cases
}

fn beta_cases() -> Vec<Case> {
    vec![
        http(
            "beta chat stream",
            "POST",
            "/api/chat",
            chat("llama3.2:3b", json!({"options": {"num_predict": 2}})),
            true,
            Some("chat"),
            Some("llama3.2:3b"),
            ALLOW_OK,
            true,
            (None, None),
        ),
        http(
            "beta chat stream:false",
            "POST",
            "/api/chat",
            chat(
                "llama3.2:3b",
                json!({"stream": false, "options": {"num_ctx": 4096}}),
            ),
            true,
            Some("chat"),
            Some("llama3.2:3b"),
            ALLOW_OK,
            true,
            (Some(4096), Some(4096)),
        ),
        http(
            "beta generate denied",
            "POST",
            "/api/generate",
            json!({"model": "llama3.2:3b", "prompt": "x"}),
            false,
            Some("generate"),
            None,
            ("deny", Some("endpoint_not_allowed"), 403),
            false,
            (None, None),
        ),
        http(
            "beta model denied",
            "POST",
            "/api/chat",
            chat("qwen2.5:7b", json!({})),
            true,
            Some("chat"),
            Some("qwen2.5:7b"),
            ("deny", Some("model_not_allowed"), 403),
            false,
            (None, None),
        ),
        http(
            "beta tags",
            "GET",
            "/api/tags",
            Value::Null,
            true,
            Some("list"),
            None,
            ALLOW_OK,
            false,
            (None, None),
        ),
        raw(
            "beta garbage",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            false,
            ("-", "-", None),
            Some(400),
            "bad_request",
        ),
        raw(
            "beta head cut off",
            b"GET /api/tags HTTP/1.1\r\n",
            true,
            ("GET", "/api/tags", Some("list")),
            Some(0),
            "client_closed",
        ),
    ]
}

/// The counts of Ollama's final chunk (or whole object) in an answer.
fn final_counts(body: &[u8]) -> (Option<u64>, Option<u64>) {
    let last = body
        .split(|&b| b == b'\n')
        .rfind(|l| !l.is_empty())
        .expect("a non-empty answer");
    let v: Value = serde_json::from_slice(last).expect("final chunk is JSON");
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

/// `bridge-host audit --summary` (table and JSON) and filters over the mixed log.
fn summary_matches(log: &std::path::Path, records: &[Value]) {
    // The expectation, computed here from the records.
    #[derive(Default, Debug, PartialEq)]
    struct Row {
        requests: u64,
        denied: u64,
        errors: u64,
        prompt: u64,
        completion: u64,
        durations: Vec<u64>,
    }
    let mut want: BTreeMap<(String, String), Row> = BTreeMap::new();
    for r in records {
        let key = (
            r["sandbox"].as_str().unwrap().to_owned(),
            r["model"].as_str().unwrap_or("-").to_owned(),
        );
        let row = want.entry(key).or_default();
        row.requests += 1;
        if r["decision"] == "deny" {
            row.denied += 1;
        } else if r["status"].as_u64().unwrap() >= 400 || !r["reason"].is_null() {
            row.errors += 1;
        }
        row.prompt += r["prompt_tokens"].as_u64().unwrap_or(0);
        row.completion += r["completion_tokens"].as_u64().unwrap_or(0);
        row.durations.push(r["duration_ms"].as_u64().unwrap());
    }
    let rank = |d: &[u64], p: usize| {
        let mut d = d.to_vec();
        d.sort_unstable();
        d[(p * d.len()).div_ceil(100).max(1) - 1]
    };
    let audit = |args: &[&str]| {
        let out = Command::new(bin("bridge-host"))
            .arg("audit")
            .arg("--file")
            .arg(log)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    let table = audit(&["--summary"]);
    let mut lines = table.lines();
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        head,
        [
            "SANDBOX",
            "MODEL",
            "REQUESTS",
            "DENIED",
            "ERRORS",
            "PROMPT_TOKENS",
            "COMPLETION_TOKENS",
            "P50_MS",
            "P95_MS"
        ],
        "{table}"
    );
    let mut got = Vec::new();
    for l in lines {
        let c: Vec<&str> = l.split_whitespace().collect();
        got.push(c.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    }
    let total = got.pop().expect("a total row");
    assert_eq!(got.len(), want.len(), "{table}");
    for (row, ((sandbox, model), w)) in got.iter().zip(&want) {
        let nums = [
            w.requests,
            w.denied,
            w.errors,
            w.prompt,
            w.completion,
            rank(&w.durations, 50),
            rank(&w.durations, 95),
        ]
        .map(|n| n.to_string());
        let mut expect = vec![sandbox.clone(), model.clone()];
        expect.extend(nums);
        assert_eq!(row, &expect, "{table}");
    }
    // The expected groups are what the mix produced.
    assert_eq!(want[&("alpha".into(), "qwen2.5:7b".into())].requests, 2 * 3);
    assert_eq!(want[&("alpha".into(), "llama3.2:3b".into())].requests, 2);
    assert_eq!(want[&("beta".into(), "llama3.2:3b".into())].requests, 2 * 2);
    assert!(want[&("alpha".into(), "qwen2.5:7b".into())].prompt > 0);
    let all: Vec<u64> = want.values().flat_map(|w| w.durations.clone()).collect();
    assert_eq!(total[0], "TOTAL", "{table}");
    assert_eq!(
        total[1..],
        [
            records.len() as u64,
            want.values().map(|w| w.denied).sum(),
            want.values().map(|w| w.errors).sum(),
            want.values().map(|w| w.prompt).sum(),
            want.values().map(|w| w.completion).sum(),
            rank(&all, 50),
            rank(&all, 95),
        ]
        .map(|n| n.to_string()),
        "{table}"
    );

    // The same as JSON rows.
    let rows: Vec<Value> = audit(&["--summary", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), want.len());
    for (r, ((sandbox, model), w)) in rows.iter().zip(&want) {
        assert_eq!(r["sandbox"], sandbox.as_str());
        assert_eq!(r["model"], model.as_str());
        assert_eq!(r["requests"], w.requests);
        assert_eq!(r["p95_ms"], rank(&w.durations, 95));
    }

    // Filters.
    let count = |args: &[&str]| audit(args).lines().count();
    let denied = records.iter().filter(|r| r["decision"] == "deny").count();
    assert_eq!(count(&["--denied", "--json"]), denied);
    assert_eq!(count(&["--allowed", "--json"]), records.len() - denied);
    assert_eq!(
        count(&["--sandbox", "beta", "--reason", "model_not_allowed"]),
        2
    );
    assert_eq!(count(&["--status", "431", "--json"]), 2);
    assert_eq!(count(&["--model", "llama3.2:1b"]), 2);
}

#[tokio::test]
async fn failures_reaching_ollama_are_recorded_as_allowed_with_the_reason() {
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let host = Host::start(&config(&format!("http://{dead}"), &[("alpha", ALPHA)], PIN)).await;
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
