//! Metrics move with requests: counters by sandbox, endpoint, model, decision and status;
//! durations; tokens; in flight; upstream errors — scraped from the host-only listener.

use bridge_tests::double::{Double, DoubleConfig, Script};
use bridge_tests::harness::{config, socket, Host};
use bridge_tests::http::{collect, next_data, post, req, send_unix};
use serde_json::json;

async fn scrape(host: &Host) -> String {
    let (s, h, body) = collect(
        send_unix(&host.path("metrics.sock"), req("GET", "/metrics", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    String::from_utf8(body.to_vec()).unwrap()
}

/// The value of one sample line, 0 when absent.
fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_with_requests() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(
        &double.url(),
        &[("agent", "models = [\"qwen2.5:7b\"]")],
        "[metrics]\nlisten = \"unix:{dir}/metrics.sock\"\n",
    ))
    .await;
    let sock = socket(&host, "agent");
    let ok = r#"ollama_bridge_requests_total{sandbox="agent",endpoint="chat",model="qwen2.5:7b",decision="allow",status="200"}"#;
    let denied = r#"ollama_bridge_requests_total{sandbox="agent",endpoint="chat",model="-",decision="deny",status="403"}"#;
    let before = scrape(&host).await;
    assert_eq!(sample(&before, ok), 0.0);

    let chat =
        json!({"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "one two three"}]});
    for _ in 0..2 {
        let (s, _, _) = collect(send_unix(&sock, post("/api/chat", &chat)).await.unwrap()).await;
        assert_eq!(s, 200);
    }
    let (s, _, _) = collect(
        send_unix(&sock, post("/api/chat", &json!({"model": "evil:1"})))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 403);

    let after = scrape(&host).await;
    assert_eq!(sample(&after, ok), 2.0, "{after}");
    assert_eq!(sample(&after, denied), 1.0, "{after}");
    // The double counts one token per word: 3 prompt tokens per request.
    assert_eq!(
        sample(
            &after,
            r#"ollama_bridge_tokens_total{sandbox="agent",model="qwen2.5:7b",kind="prompt"}"#
        ),
        6.0,
        "{after}"
    );
    assert!(
        sample(
            &after,
            r#"ollama_bridge_tokens_total{sandbox="agent",model="qwen2.5:7b",kind="completion"}"#
        ) > 0.0
    );
    assert_eq!(
        sample(
            &after,
            r#"ollama_bridge_request_duration_seconds_count{sandbox="agent",endpoint="chat"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            &after,
            r#"ollama_bridge_in_flight_requests{sandbox="agent"}"#
        ),
        0.0
    );
    assert!(
        after.contains("ollama_bridge_audit_records_dropped 0"),
        "{after}"
    );

    // A stream held open is in flight until it ends.
    double.set_script(Script {
        gated: true,
        ..Script::default()
    });
    let resp = send_unix(&sock, post("/api/chat", &chat)).await.unwrap();
    let mut body = resp.into_body();
    next_data(&mut body).await.unwrap();
    assert_eq!(
        sample(
            &scrape(&host).await,
            r#"ollama_bridge_in_flight_requests{sandbox="agent"}"#
        ),
        1.0
    );
    double.release(100);
    while next_data(&mut body).await.is_some() {}
    drop(body);

    // Ollama gone: an upstream error is counted.
    drop(double);
    let (s, _, _) = collect(send_unix(&sock, post("/api/chat", &chat)).await.unwrap()).await;
    assert_eq!(s, 502);
    let last = scrape(&host).await;
    assert_eq!(
        sample(
            &last,
            r#"ollama_bridge_upstream_errors_total{sandbox="agent",reason="upstream_unreachable"}"#
        ),
        1.0,
        "{last}"
    );
    assert_eq!(
        sample(
            &last,
            r#"ollama_bridge_in_flight_requests{sandbox="agent"}"#
        ),
        0.0,
        "{last}"
    );
}

#[tokio::test]
async fn connections_refused_at_max_connections_are_counted() {
    use bridge_tests::http::{raw_unix, response_on, GET_VERSION};
    use tokio::io::AsyncWriteExt;
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(
        &double.url(),
        &[("agent", "max_connections = 1")],
        "[metrics]\nlisten = \"unix:{dir}/metrics.sock\"\n",
    ))
    .await;
    let sock = socket(&host, "agent");
    let refused = "ollama_bridge_connections_refused_total{sandbox=\"agent\"}";
    // One connection, kept open after a whole answer: accepted and counted.
    let mut held = tokio::net::UnixStream::connect(&sock).await.unwrap();
    held.write_all(GET_VERSION).await.unwrap();
    let r = response_on(&mut held).await;
    assert_eq!(r.status, 200);
    assert_eq!(sample(&scrape(&host).await, refused), 0.0);
    // The second gets the 503, and the metric counts it (no audit record: not a request).
    let r = raw_unix(&sock, GET_VERSION).await.unwrap().unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(sample(&scrape(&host).await, refused), 1.0);
    assert_eq!(host.audit_records().len(), 1);
    drop(held);
}

/// Tool calls recovered from printed text are counted per sandbox and model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salvaged_tool_calls_are_counted() {
    use bridge_tests::double::printed::Printed;
    use bridge_tests::double::ToolPlacement;
    let double = Double::start(DoubleConfig::default()).await;
    double.set_script(Script {
        tools: ToolPlacement::Printed(Printed::Tagged),
        ..Script::default()
    });
    let host = Host::start(&config(
        &double.url(),
        &[("agent", "models = [\"llama3.2:3b\"]")],
        "[metrics]\nlisten = \"unix:{dir}/metrics.sock\"\n",
    ))
    .await;
    let sock = socket(&host, "agent");
    let line = r#"ollama_bridge_tool_calls_salvaged_total{sandbox="agent",model="llama3.2:3b"}"#;
    let tools = bridge_tests::oai::tools();
    let chat = json!({"model": "llama3.2:3b", "tools": tools,
        "messages": [{"role": "user", "content": "weather and time?"}]});
    for _ in 0..2 {
        let (s, _, _) = collect(send_unix(&sock, post("/api/chat", &chat)).await.unwrap()).await;
        assert_eq!(s, 200);
    }
    let after = scrape(&host).await;
    assert_eq!(sample(&after, line), 4.0, "{after}");
}
