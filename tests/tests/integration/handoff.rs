//! The connection hand-off as negotiated: bridge-guest hands connections over when the
//! listener agrees (the default on unix sockets), relays when it says no or does not
//! understand (an older host), and an old guest's plain HTTP on the socket still works.
//! A handed connection is the sandbox's, recorded with the guest's credentials, and
//! counts against `max_connections`; its client's reset is noticed while it waits.

use bridge_tests::double::{Double, DoubleConfig};
use bridge_tests::harness::{config, socket, Guest, Host};
use bridge_tests::http::{raw_unix, response_on, GET_VERSION, GUARD};
use bridge_tests::native::chat;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener};

use crate::fair_queue::{ask, held, wait_queue};
use crate::handoff_hostile::{host_with, sample, scrape};

const HANDED: &str = "ollama_bridge_handoff_connections_total{sandbox=\"agent\"}";

async fn guest(sock: &std::path::Path) -> Guest {
    let connect = format!("unix:{}", sock.display());
    Guest::start_with(&["--connect", &connect, "--handoff", "on"]).await
}

/// One keep-alive request on a fresh connection to the guest; the connection stays open.
async fn version_via(g: &Guest) -> (u16, TcpStream) {
    let mut c = TcpStream::connect(g.addr).await.unwrap();
    c.write_all(GET_VERSION).await.unwrap();
    let r = tokio::time::timeout(GUARD, response_on(&mut c))
        .await
        .expect("an answer");
    (r.status, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_connection_is_the_sandboxs_and_carries_the_guests_credentials() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = host_with(&double, "").await;
    let g = guest(&socket(&host, "agent")).await;
    let (status, c) = version_via(&g).await;
    assert_eq!(status, 200);
    drop(c);
    assert_eq!(
        sample(&scrape(&host).await, HANDED),
        1.0,
        "handed over, not relayed"
    );
    let recs = host.audit_records();
    let rec = recs.iter().find(|r| r["path"] == "/api/version").unwrap();
    assert_eq!(rec["sandbox"], "agent");
    assert_eq!(rec["decision"], "allow");
    assert_eq!(rec["peer"]["uid"], nix::unistd::getuid().as_raw());
    assert_eq!(
        rec["peer"]["pid"],
        g.child.id().unwrap(),
        "the guest handed it over"
    );
    // An old guest (plain HTTP on the socket) is served as before.
    let r = raw_unix(&socket(&host, "agent"), GET_VERSION)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_false_makes_the_guest_relay() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = host_with(&double, "handoff = false").await;
    let g = guest(&socket(&host, "agent")).await;
    for _ in 0..2 {
        let (status, _c) = version_via(&g).await;
        assert_eq!(status, 200);
    }
    assert_eq!(sample(&scrape(&host).await, HANDED), 0.0, "relayed");
    let recs = host.audit_records();
    assert_eq!(
        recs.iter().filter(|r| r["path"] == "/api/version").count(),
        2
    );
    assert!(
        recs.iter().all(|r| r["reason"] != "bad_request"),
        "{recs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_connections_count_against_max_connections() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = host_with(&double, "max_connections = 2").await;
    let g = guest(&socket(&host, "agent")).await;
    // Two kept open (the control connection is not one of them).
    let (s1, _c1) = version_via(&g).await;
    let (s2, _c2) = version_via(&g).await;
    assert_eq!((s1, s2), (200, 200));
    let (s3, _c3) = version_via(&g).await;
    assert_eq!(s3, 503, "over max_connections: the same short refusal");
    let m = scrape(&host).await;
    assert_eq!(sample(&m, HANDED), 3.0);
    let refused = "ollama_bridge_connections_refused_total{sandbox=\"agent\"}";
    assert_eq!(sample(&m, refused), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_does_not_understand_gets_the_relay() {
    // An older bridge-host: HTTP on the socket, a 400 for the preamble.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sock");
    let old = UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        let mut relayed = 0;
        while relayed < 1 {
            let (mut s, _) = old.accept().await.unwrap();
            let mut first = [0u8; 1];
            s.read_exact(&mut first).await.unwrap();
            let answer: &[u8] = if first[0] == 0 {
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            } else {
                relayed += 1;
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            };
            s.write_all(answer).await.unwrap();
        }
    });
    let g = guest(&path).await;
    let (status, _c) = version_via(&g).await;
    assert_eq!(status, 200, "relayed to the old host");
    tokio::time::timeout(GUARD, server).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_client_that_resets_while_queued_is_noticed() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(
        &config(
            &double.url(),
            &[("agent", "")],
            "[metrics]\nlisten = \"unix:{dir}/metrics.sock\"\n",
        )
        .replace(
            "[upstream]\n",
            "[upstream]\nmax_parallel = 1\nearly_headers = \"off\"\n",
        ),
    )
    .await;
    let sock = socket(&host, "agent");
    let g = guest(&sock).await;
    double.set_script(held());
    let first = tokio::spawn(ask(sock.clone(), "first".into()));
    double.wait_held(1).await;
    // Through the guest (handed over), a request that waits for the one slot...
    let body = chat("qwen2.5:7b", json!({"stream": false})).to_string();
    let mut leaver = TcpStream::connect(g.addr).await.unwrap();
    let head = format!(
        "POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    leaver.write_all(head.as_bytes()).await.unwrap();
    wait_queue(&sock, "waiting", 1).await;
    // ...whose client goes away with a reset: the host's own TCP socket reports it.
    leaver.set_zero_linger().unwrap();
    drop(leaver);
    wait_queue(&sock, "waiting", 0).await;
    double.release_headers(1);
    first.await.unwrap();
    assert_eq!(sample(&scrape(&host).await, HANDED), 1.0);
    let recs = host.audit_records();
    let gone = recs
        .iter()
        .find(|r| r["reason"] == "client_closed")
        .unwrap();
    assert_eq!(gone["peer"]["pid"], g.child.id().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_handoff_off_by_reload_loses_no_connection() {
    let double = Double::start(DoubleConfig::default()).await;
    let cfg = |keys: &str| {
        config(
            &double.url(),
            &[("agent", keys)],
            "[metrics]\nlisten = \"unix:{dir}/metrics.sock\"\n",
        )
    };
    let mut host = Host::start(&cfg("")).await;
    let g = guest(&socket(&host, "agent")).await;
    assert_eq!(version_via(&g).await.0, 200);
    assert_eq!(sample(&scrape(&host).await, HANDED), 1.0);
    host.reconfigure(&cfg("handoff = false"));
    host.wait_line("reloaded configuration").await;
    // The control connection the guest holds is closed at its next connection, which is
    // still served; later ones are relayed.
    for _ in 0..3 {
        assert_eq!(version_via(&g).await.0, 200);
    }
    assert!(sample(&scrape(&host).await, HANDED) <= 3.0);
}
