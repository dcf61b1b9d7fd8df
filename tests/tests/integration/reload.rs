//! Live reload on SIGHUP: the new configuration is validated first (a bad one is logged
//! and ignored), policies swap for the next request, listeners are added and removed,
//! and a stream started before the reload completes under the policy it started with.

use bridge_tests::double::{Double, DoubleConfig, Script};
use bridge_tests::harness::{config, socket, Host};
use bridge_tests::http::{collect, ndjson, next_data, rest, send_unix};
use bridge_tests::native::chat_request;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowing_the_allowlist_applies_to_the_next_request_while_a_started_stream_completes() {
    let double = Double::start(DoubleConfig::default()).await;
    let wide = config(
        &double.url(),
        &[("agent", "models = [\"qwen2.5:7b\", \"llama3.2:*\"]")],
        "",
    );
    let narrow = config(&double.url(), &[("agent", "models = [\"qwen2.5:7b\"]")], "");
    let mut host = Host::start(&wide).await;
    let sock = socket(&host, "agent");

    double.set_script(Script {
        gated: true,
        text: Some("a b c".into()),
        ..Script::default()
    });
    let resp = send_unix(&sock, chat_request("llama3.2:3b", json!({"stream": true})))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    next_data(&mut body).await.expect("first chunk");

    host.reconfigure(&narrow);
    host.wait_line("reloaded configuration").await;

    let (s, _, b) = collect(
        send_unix(&sock, chat_request("llama3.2:3b", json!({"stream": false})))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 403, "{}", String::from_utf8_lossy(&b));
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("(allowed: qwen2.5:7b)"),
        "{v}"
    );
    let (s, _, _) = collect(
        send_unix(&sock, chat_request("qwen2.5:7b", json!({"stream": false})))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);

    // The stream started under the old policy runs to its end.
    double.release(100);
    let last = ndjson(&rest(&mut body).await).pop().unwrap();
    assert_eq!(last["done"], true);
}

#[tokio::test]
async fn a_bad_configuration_is_refused_and_the_old_one_stays() {
    let double = Double::start(DoubleConfig::default()).await;
    let good = config(&double.url(), &[("agent", "models = [\"qwen2.5:7b\"]")], "");
    let mut host = Host::start(&good).await;
    host.reconfigure(&(good.clone() + "\nbogus_key = 1\n"));
    let line = host.wait_line("reload").await;
    assert!(
        line.starts_with("reload failed: ")
            && line.contains("has 1 error(s)")
            && line.contains("check-config")
            && line.ends_with("the running configuration stays"),
        "{line}"
    );
    assert!(host.log().contains("bogus_key"), "the error is logged");
    let (s, _, _) = collect(
        send_unix(
            &socket(&host, "agent"),
            chat_request("qwen2.5:7b", json!({"stream": false})),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn listeners_are_added_and_removed() {
    let double = Double::start(DoubleConfig::default()).await;
    let one = config(&double.url(), &[("agent", "models = [\"qwen2.5:7b\"]")], "");
    let two = config(
        &double.url(),
        &[
            ("agent", "models = [\"qwen2.5:7b\"]"),
            ("extra", "models = [\"llama3.2:*\"]"),
        ],
        "",
    );
    let only_extra = config(&double.url(), &[("extra", "models = [\"llama3.2:*\"]")], "");
    let mut host = Host::start(&one).await;

    host.reconfigure(&two);
    let line = host.wait_line("listening sandbox=extra").await;
    assert!(line.ends_with("extra/ollama.sock"), "{line}");
    host.wait_line("reloaded configuration").await;
    let (s, _, _) = collect(
        send_unix(
            &socket(&host, "extra"),
            chat_request("llama3.2:3b", json!({"stream": false})),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 200);

    host.reconfigure(&only_extra);
    host.wait_line("stopped sandbox=agent").await;
    host.wait_line("reloaded configuration").await;
    assert!(
        !socket(&host, "agent").exists(),
        "the removed listener's socket is gone"
    );
    assert!(tokio::net::UnixStream::connect(socket(&host, "agent"))
        .await
        .is_err());
    let (s, _, _) = collect(
        send_unix(
            &socket(&host, "extra"),
            chat_request("llama3.2:3b", json!({"stream": false})),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    let sandboxes: Vec<String> = host
        .audit_records()
        .iter()
        .map(|r| r["sandbox"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sandboxes, ["extra", "extra"]);
}

/// A value that is allowed but surely wrong (`endpoints = []`) is logged as a warning
/// with its line, at start and again by a reload that keeps it; the daemon serves.
#[tokio::test]
async fn surely_wrong_values_are_logged_as_warnings_at_start_and_on_reload() {
    let double = Double::start(DoubleConfig::default()).await;
    let text = config(&double.url(), &[("agent", "endpoints = []")], "");
    let mut host = Host::start(&text).await;
    let line = host
        .wait_log("endpoints = [] allows no endpoint class")
        .await;
    assert!(
        line.contains("WARN") && line.contains("bridge.toml:"),
        "{line}"
    );
    host.reconfigure(&text);
    host.wait_line("reloaded configuration").await;
    let warned = host
        .log()
        .lines()
        .filter(|l| l.contains("endpoints = [] allows no endpoint class"))
        .count();
    assert_eq!(warned, 2, "{}", host.log());
}
