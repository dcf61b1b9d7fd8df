//! `/_bridge/status` under load: every listener answers from one shared health probe of
//! Ollama (at most one probe a second, version + tags), so a burst of status calls
//! costs Ollama nothing more; status calls have their own small bucket per sandbox
//! (10 at once, then 60 a minute), so they neither eat `requests_per_minute` nor pass
//! unlimited.

use std::time::Instant;

use bridge_tests::double::{Double, DoubleConfig};
use bridge_tests::harness::{bin, config, dead_upstream, socket, Host};
use bridge_tests::http::{collect, req, send_unix, GET_VERSION};
use protocol::route::STATUS_PATH;
use serde_json::Value;

/// `n` status calls on `sock` at once: their statuses, bodies and `Retry-After`s.
async fn status_calls(sock: &std::path::Path, n: usize) -> Vec<(u16, Value, Option<String>)> {
    let calls = (0..n).map(|_| {
        let sock = sock.to_owned();
        tokio::spawn(async move {
            let (s, h, b) =
                collect(send_unix(&sock, req("GET", STATUS_PATH, "")).await.unwrap()).await;
            let retry = h.get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            (s, serde_json::from_slice(&b).unwrap(), retry)
        })
    });
    let mut out = Vec::new();
    for c in calls.collect::<Vec<_>>() {
        out.push(c.await.unwrap());
    }
    out
}

/// 50 status calls at once, spread over five listeners: all answered, and Ollama sees
/// the one probe (two requests) per second of the burst — not two per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_status_calls_share_one_probe_of_ollama() {
    let double = Double::start(DoubleConfig::default()).await;
    let names = ["s1", "s2", "s3", "s4", "s5"];
    let sandboxes: Vec<(&str, &str)> = names
        .iter()
        .map(|n| (*n, "requests_per_minute = 5"))
        .collect();
    let host = Host::start(&config(&double.url(), &sandboxes, "")).await;
    let start = Instant::now();
    let mut calls = Vec::new();
    for n in names {
        let sock = socket(&host, n);
        calls.push(tokio::spawn(async move { status_calls(&sock, 10).await }));
    }
    let mut answers = Vec::new();
    for c in calls {
        answers.extend(c.await.unwrap());
    }
    let elapsed = start.elapsed();
    assert_eq!(answers.len(), 50);
    for (status, doc, _) in &answers {
        assert_eq!(*status, 200, "{doc}");
        assert_eq!(doc["upstream"]["reachable"], true, "{doc}");
        assert_eq!(doc["upstream"]["ollama_version"], "0.33.0", "{doc}");
        assert!(
            !doc["available_models"].as_array().unwrap().is_empty(),
            "{doc}"
        );
    }
    let reached = double.requests();
    let paths: Vec<&str> = reached.iter().map(|r| r.path.as_str()).collect();
    // One probe (version, tags) per second at most, whatever the machine's speed. The
    // answers may all come from the probe `serve` sends at start (not recorded).
    let allowed = 2 * (1 + elapsed.as_secs() as usize);
    assert!(
        paths.len() <= allowed,
        "{} requests reached Ollama in {elapsed:?}: {paths:?}",
        paths.len()
    );
    assert!(paths
        .iter()
        .all(|p| *p == "/api/version" || *p == "/api/tags"));
    // How old the reading was, for whoever wonders.
    for (_, doc, _) in &answers {
        let age = doc["upstream"]["checked_ms_ago"].as_u64();
        assert!(age.is_some_and(|a| a < 10_000), "{doc}");
    }
    // Every call is audited.
    let recs = host.audit_records();
    assert_eq!(recs.len(), 50);
    assert!(recs
        .iter()
        .all(|r| r["endpoint"] == "bridge" && r["status"] == 200));
}

/// A flood of status calls gets 429 beyond its own bucket, while a sandbox at its
/// `requests_per_minute` limit still gets status answers and status calls take no token
/// of that limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_calls_have_their_own_rate_limit() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(
        &double.url(),
        &[("flood", "requests_per_minute = 2")],
        "",
    ))
    .await;
    let sock = socket(&host, "flood");
    // Status calls first: they leave requests_per_minute untouched.
    for (s, doc, _) in status_calls(&sock, 3).await {
        assert_eq!(s, 200, "{doc}");
    }
    let version = || async {
        bridge_tests::http::raw_unix(&sock, GET_VERSION)
            .await
            .unwrap()
            .expect("an answer")
            .status
    };
    assert_eq!(version().await, 200);
    assert_eq!(version().await, 200);
    assert_eq!(version().await, 429, "requests_per_minute = 2 is used up");
    // At the limit, status still answers (7 tokens of its bucket of 10 are left).
    let (s, doc, _) = status_calls(&sock, 1).await.remove(0);
    assert_eq!(s, 200, "{doc}");
    assert_eq!(doc["limits"]["requests_per_minute"], 2);

    // A flood: the rest of the bucket is answered, then 429 with Retry-After.
    let answers = status_calls(&sock, 30).await;
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let refused: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert_eq!(ok + refused.len(), 30, "{answers:?}");
    // 6 tokens were left; the bucket refills at one a second while the flood runs.
    assert!((6..=8).contains(&ok), "{ok} answered: {answers:?}");
    for (_, body, retry) in &refused {
        let msg = body["error"].as_str().unwrap();
        assert!(msg.contains("status calls"), "{msg}");
        let secs: u64 = retry.as_deref().expect("Retry-After").parse().unwrap();
        assert!((1..=60).contains(&secs), "{secs}");
    }
    let limited: Vec<Value> = host
        .audit_records()
        .into_iter()
        .filter(|r| r["endpoint"] == "bridge" && r["reason"] == "rate_limited")
        .collect();
    assert_eq!(limited.len(), refused.len());
    assert!(limited
        .iter()
        .all(|r| r["status"] == 429 && r["decision"] == "deny"));

    // The operator's command says the listener refused, not that Ollama is down.
    let out = tokio::process::Command::new(bin("bridge-host"))
        .args(["status", "--config"])
        .arg(&host.config)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("unknown: the listener answered HTTP 429"),
        "{text}"
    );
    assert!(!text.contains("DOWN"), "{text}");
}

/// `serve` probes Ollama once at start, without waiting for it: with Ollama down it is
/// ready all the same, and a warning names the upstream and what to do.
#[tokio::test]
async fn serve_warns_at_start_when_ollama_is_down() {
    let upstream = dead_upstream();
    // `Host::start` returns once the daemon is ready (its `listening` line).
    let host = Host::start(&config(&upstream, &[("a", "")], "")).await;
    let line = host.wait_log("Ollama is not reachable").await;
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&upstream), "{line}");
    assert!(line.contains("ollama serve"), "{line}");
    assert!(line.contains("[upstream] url"), "{line}");
    // It still serves: the status endpoint answers, saying Ollama is unreachable.
    let doc = bridge_tests::http::bridge_status(&socket(&host, "a")).await;
    assert_eq!(doc["upstream"]["reachable"], false, "{doc}");
    // The sandbox's document names no upstream address (the host log may).
    let authority = upstream.trim_start_matches("http://");
    assert!(!doc.to_string().contains(authority), "{doc}");
}
