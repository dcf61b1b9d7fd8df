//! The fair queue in front of the upstream (`[upstream] max_parallel`): a late sandbox
//! overtakes a busy one's backlog, weights split a saturated upstream, a client that
//! leaves while queued holds nothing, a wait past `queue_timeout` is 429 and past
//! `header_timeout` is 504 (in the stream when early headers went out), and listings
//! never queue. The double holds each request before its headers until the test lets it
//! answer, so what is in Ollama at any moment is known exactly; every wait is for an
//! event (a held request, a status value), never for time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bridge_tests::double::{Double, DoubleConfig, Script};
use bridge_tests::harness::{config, socket, Host};
use bridge_tests::http::{
    bridge_status, collect, next_data, raw_unix, req, send_unix, GET_VERSION, GUARD,
};
use bridge_tests::native::{chat, chat_request};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

pub(crate) fn held() -> Script {
    Script {
        hold_headers: true,
        ..Script::default()
    }
}

/// A non-streamed chat whose prompt names who sent it.
pub(crate) async fn ask(sock: PathBuf, who: String) -> (u16, String) {
    let body = json!({"stream": false, "messages": [{"role": "user", "content": who}]});
    let (s, _, b) = collect(
        send_unix(&sock, chat_request("qwen2.5:7b", body))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    (s, who)
}

/// Who sent each chat the double received, in order.
fn order(double: &Double) -> Vec<String> {
    double
        .requests()
        .iter()
        .filter(|r| r.path == "/api/chat")
        .map(|r| {
            r.json()["messages"][0]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

async fn scrape(host: &Host) -> String {
    let (s, _, body) = collect(
        send_unix(&host.path("metrics.sock"), req("GET", "/metrics", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    String::from_utf8(body.to_vec()).unwrap()
}

/// Waits until the sandbox's part of the queue shows `want` for `key`.
pub(crate) async fn wait_queue(sock: &Path, key: &str, want: u64) {
    tokio::time::timeout(GUARD, async {
        loop {
            let v = bridge_status(sock).await;
            if v["queue"][key] == want {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("/_bridge/status shows queue.{key} = {want} within the guard time"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_sandbox_overtakes_a_busy_ones_backlog() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(
        &config(
            &double.url(),
            &[("a", ""), ("b", "")],
            "[metrics]\nlisten = \"unix:{dir}/metrics.sock\"\n",
        )
        .replace("[upstream]\n", "[upstream]\nmax_parallel = 1\n")
        // Fairness, not timeouts: a loaded machine must not turn a long wait into a 504.
        .replace("header_timeout = \"30s\"", "header_timeout = \"10m\""),
    )
    .await;
    let (a, b) = (socket(&host, "a"), socket(&host, "b"));
    double.set_script(held());
    let mut tasks = JoinSet::new();
    for i in 1..=6 {
        tasks.spawn(ask(a.clone(), format!("a{i}")));
    }
    // One is in Ollama, five wait in the bridge (not in Ollama).
    double.wait_held(1).await;
    wait_queue(&a, "waiting", 5).await;
    assert_eq!(double.held(), 1);
    tasks.spawn(ask(b.clone(), "b1".into()));
    wait_queue(&b, "waiting", 1).await;
    let m = scrape(&host).await;
    assert!(
        m.contains(r#"ollama_bridge_queued_requests{sandbox="a"} 5"#)
            && m.contains(r#"ollama_bridge_queued_requests{sandbox="b"} 1"#),
        "{m}"
    );
    let st = bridge_status(&b).await;
    // B sees its own request only.
    assert_eq!(st["queue"]["slots_held"], 0, "{st}");
    assert_eq!(st["queue"]["max_parallel"], 1, "{st}");

    double.release_headers(7);
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let got = order(&double);
    assert_eq!(got.len(), 7, "{got:?}");
    // FIFO would have served b1 seventh; the least-served sandbox goes first.
    assert_eq!(got[1], "b1", "{got:?}");

    let recs = host.audit_records();
    let b1 = recs
        .iter()
        .find(|r| r["sandbox"] == "b" && r["path"] == "/api/chat")
        .unwrap();
    assert!(b1["queued_ms"].as_u64().is_some(), "{b1}");
    let waited = recs
        .iter()
        .filter(|r| r["queued_ms"].as_u64().is_some())
        .count();
    assert_eq!(
        waited, 7,
        "every chat has its wait in the record: {recs:#?}"
    );
    let m = scrape(&host).await;
    assert!(
        m.contains(r#"ollama_bridge_queue_wait_seconds_count{sandbox="a"} 6"#)
            && m.contains(r#"ollama_bridge_queued_requests{sandbox="a"} 0"#),
        "{m}"
    );
    // Listings and the version never queue.
    let r = raw_unix(&a, GET_VERSION).await.unwrap().unwrap();
    assert_eq!(r.status, 200);
    let v = host.audit_records();
    assert!(
        v.last().unwrap().get("queued_ms").is_none(),
        "{:?}",
        v.last()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_a_saturated_upstream() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(
        &config(
            &double.url(),
            &[("a", "weight = 2"), ("b", "weight = 1")],
            "",
        )
        .replace("[upstream]\n", "[upstream]\nmax_parallel = 1\n")
        // Fairness, not timeouts: a loaded machine must not turn a long wait into a 504.
        .replace("header_timeout = \"30s\"", "header_timeout = \"10m\""),
    )
    .await;
    double.set_script(held());
    // Three clients per sandbox, each asking again as soon as it has its answer: both
    // sandboxes always have requests waiting.
    let mut tasks = JoinSet::new();
    for (name, sock) in [("a", socket(&host, "a")), ("b", socket(&host, "b"))] {
        for c in 0..3 {
            let sock = sock.clone();
            tasks.spawn(async move {
                for i in 0.. {
                    ask(sock.clone(), format!("{name}-{c}-{i}")).await;
                }
            });
        }
    }
    // Turns one at a time: the k-th request reaches "Ollama" only after the one before
    // it was answered (max_parallel = 1), so counting arrivals never misses a turn. Every
    // turn is held about as long as the others (the test releases each as soon as it
    // arrives): service is slot-time, so a turn held much longer — say, while the test
    // polled the status — would be paid back in turns to the other sandbox. The first
    // WARM turns let all six clients in; then 90 are counted.
    const WARM: usize = 30;
    const TURNS: usize = 90;
    for k in 1..=(WARM + TURNS) as u64 + 1 {
        tokio::time::timeout(GUARD, double.wait_held_total(k))
            .await
            .unwrap_or_else(|_| panic!("request {k} reached the double within the guard time"));
        double.release_headers(1);
    }
    let start = WARM;
    tasks.abort_all();
    let got = order(&double);
    let turns = &got[start..start + TURNS];
    let to_a = turns.iter().filter(|w| w.starts_with("a-")).count();
    eprintln!("A got {to_a} of {TURNS} turns");
    // Equal request lengths, weights 2:1: 60 of 90 to A. Slot-time is wall time, so a
    // few turns either way are scheduling noise; FIFO or round robin would give 45.
    assert!(
        (52..=68).contains(&to_a),
        "A got {to_a} of {TURNS} turns (want about 60): {turns:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_the_queue_holds_no_slot() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(&double.url(), &[("a", "")], "").replace(
        "[upstream]\n",
        "[upstream]\nmax_parallel = 1\nearly_headers = \"off\"\n",
    ))
    .await;
    let a = socket(&host, "a");
    double.set_script(held());
    let first = tokio::spawn(ask(a.clone(), "first".into()));
    double.wait_held(1).await;
    // A client that sends its request and closes its connection while it waits.
    let body = chat("qwen2.5:7b", json!({"stream": false})).to_string();
    let mut leaver = tokio::net::UnixStream::connect(&a).await.unwrap();
    let head = format!(
        "POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    leaver.write_all(head.as_bytes()).await.unwrap();
    wait_queue(&a, "waiting", 1).await;
    drop(leaver);
    wait_queue(&a, "waiting", 0).await;
    double.release_headers(1);
    first.await.unwrap();
    wait_queue(&a, "slots_held", 0).await;
    // The next request goes straight to Ollama.
    let next = tokio::spawn(ask(a.clone(), "next".into()));
    double.wait_held(1).await;
    double.release_headers(1);
    next.await.unwrap();
    assert_eq!(order(&double), ["first", "next"]);
    let recs = host.audit_records();
    let gone = recs
        .iter()
        .find(|r| r["reason"] == "client_closed")
        .unwrap_or_else(|| panic!("{recs:#?}"));
    assert!(gone.get("queued_ms").is_none(), "never got a slot: {gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_past_its_limit_is_429_with_queue_timeout_and_504_without() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(
        &config(
            &double.url(),
            &[
                ("busy", ""),
                ("q", "queue_timeout = \"200ms\""),
                ("h", "tokens_per_hour = 1000"),
            ],
            "",
        )
        .replace(
            "[upstream]\n",
            "[upstream]\nmax_parallel = 1\nearly_headers = \"100ms\"\n",
        )
        .replace("header_timeout = \"30s\"", "header_timeout = \"1s\""),
    )
    .await;
    // A stream in progress holds the one slot (its chunks wait for the test).
    double.set_script(Script {
        gated: true,
        ..Script::default()
    });
    let resp = send_unix(
        &socket(&host, "busy"),
        chat_request("qwen2.5:7b", json!({"stream": true})),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let mut busy = resp.into_body();
    next_data(&mut busy).await.expect("first chunk");

    // queue_timeout (shorter than header_timeout): 429 with an honest Retry-After.
    let plain = || chat_request("qwen2.5:7b", json!({"stream": false}));
    let (s, h, b) = collect(send_unix(&socket(&host, "q"), plain()).await.unwrap()).await;
    assert_eq!(s, 429, "{}", String::from_utf8_lossy(&b));
    assert_eq!(h.get("retry-after").unwrap(), "1");
    let msg = String::from_utf8_lossy(&b);
    assert!(
        msg.contains("queue_timeout") && msg.contains("max_parallel"),
        "{msg}"
    );

    // No queue_timeout: as long as a direct request would have waited inside Ollama
    // (header_timeout from its arrival), then 504.
    let (s, _, b) = collect(send_unix(&socket(&host, "h"), plain()).await.unwrap()).await;
    assert_eq!(s, 504, "{}", String::from_utf8_lossy(&b));
    assert!(String::from_utf8_lossy(&b).contains("header_timeout"));

    // A streamed one has its early headers by then: its error comes in its stream.
    let resp = send_unix(
        &socket(&host, "h"),
        chat_request("qwen2.5:7b", json!({"stream": true})),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, _, b) = collect(resp).await;
    let line: Value = serde_json::from_slice(b.trim_ascii()).unwrap();
    assert!(
        line["error"].as_str().unwrap().contains("header_timeout"),
        "{line}"
    );

    assert_eq!(double.requests().len(), 1, "neither reached Ollama");
    double.release(1000);
    while next_data(&mut busy).await.is_some() {}
    let recs = host.audit_records();
    let chat_of = |sb: &str| {
        recs.iter()
            .find(|r| r["sandbox"] == sb && r["path"] == "/api/chat")
            .unwrap_or_else(|| panic!("{recs:#?}"))
            .clone()
    };
    let q = chat_of("q");
    assert_eq!(
        (&q["status"], &q["reason"]),
        (&json!(429), &json!("rate_limited"))
    );
    let streamed = recs
        .iter()
        .filter(|r| r["sandbox"] == "h" && r["path"] == "/api/chat")
        .nth(1)
        .unwrap_or_else(|| panic!("{recs:#?}"));
    assert_eq!(
        (&streamed["status"], &streamed["reason"]),
        (&json!(200), &json!("upstream_timeout"))
    );
    let h = chat_of("h");
    assert_eq!(
        (&h["status"], &h["reason"]),
        (&json!(504), &json!("upstream_timeout"))
    );
    wait_queue(&socket(&host, "busy"), "slots_held", 0).await;
    // Requests that never had their turn at Ollama cost no tokens.
    let st = bridge_status(&socket(&host, "h")).await;
    assert_eq!(st["tokens"]["hour"]["used"], 0, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_request_that_waits_gets_early_headers_then_its_answer() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(&double.url(), &[("a", "")], "").replace(
        "[upstream]\n",
        "[upstream]\nmax_parallel = 1\nearly_headers = \"100ms\"\n",
    ))
    .await;
    let a = socket(&host, "a");
    double.set_script(held());
    let first = tokio::spawn(ask(a.clone(), "first".into()));
    double.wait_held(1).await;
    // The streamed one waits in the bridge's queue, yet its headers come.
    let resp = send_unix(&a, chat_request("qwen2.5:7b", json!({"stream": true})))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(double.held(), 1, "still queued in the bridge");
    double.release_headers(2);
    first.await.unwrap();
    let (_, _, body) = collect(resp).await;
    let last: Value = serde_json::from_slice(
        body.split(|&b| b == b'\n')
            .rfind(|l| !l.is_empty())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["done"], true, "{}", String::from_utf8_lossy(&body));
    let recs = host.audit_records();
    let streamed = recs
        .iter()
        .find(|r| r["status"] == 200 && r["queued_ms"].as_u64() > Some(0));
    assert!(streamed.is_some(), "{recs:#?}");
}
