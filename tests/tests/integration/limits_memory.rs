//! Bounded resources under hostile volume: a 1 GiB body is refused with 413 (declared:
//! before a byte of it is read; chunked: as soon as it passes max_body) while the
//! daemon's peak RSS stays under 64 MiB, and 2,000 idle connections on one listener
//! neither stop another listener from serving nor leave a client over
//! `max_connections` hanging (it gets a 503 and a close).

use std::path::Path;

use bridge_tests::double::{Double, DoubleConfig};
use bridge_tests::harness::{config, peak_rss, socket, Host};
use bridge_tests::http::{raw_unix, raw_unix_writing, read_until_close, response_on, GET_VERSION};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

const GIB: u64 = 1 << 30;

/// Sends `head` and then body bytes from `chunk` until `total` or until the daemon stops
/// reading, while reading the answer. Returns the status and the body bytes sent.
async fn send_huge(sock: &Path, head: Vec<u8>, chunk: Vec<u8>, total: u64) -> (u16, u64) {
    let (resp, sent) = raw_unix_writing(sock, head, chunk, total).await;
    (resp.status, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_body_is_refused_with_413_and_the_daemon_stays_small() {
    let double = Double::start(DoubleConfig::default()).await;
    // The default max_body (32 MiB).
    let host = Host::start(&config(&double.url(), &[("big", "")], "")).await;
    let sock = socket(&host, "big");

    // Declared: refused before the body is read.
    let head = format!(
        "POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {GIB}\r\n\r\n"
    );
    let (status, sent) = send_huge(&sock, head.into_bytes(), vec![b' '; 64 << 10], GIB).await;
    assert_eq!(status, 413);
    assert!(sent < GIB, "the daemon stopped reading");

    // Chunked: counted while it streams in, refused once past max_body.
    let data = vec![b' '; 64 << 10];
    let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
    chunk.extend_from_slice(&data);
    chunk.extend_from_slice(b"\r\n");
    let head = b"POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let (status, sent) = send_huge(&sock, head, chunk, GIB).await;
    assert_eq!(status, 413);
    assert!(sent < GIB, "the daemon stopped reading");

    let recs: Vec<Value> = host.audit_records();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert!(recs
        .iter()
        .all(|r| r["status"] == 413 && r["reason"] == "too_large"));
    assert_eq!(recs[0]["bytes_in"], 0, "the declared body was not read");
    assert!(double.requests().is_empty());

    let peak = peak_rss(host.child.id().unwrap());
    eprintln!("daemon peak RSS (VmHWM): {} KiB", peak / 1024);
    assert!(peak < 64 << 20, "peak RSS {} MiB", peak >> 20);
}

fn raise_own_fd_limit(want: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= want,
        "this test needs {want} open files; the hard limit is {hard}"
    );
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_on_one_listener_do_not_stop_another() {
    const IDLE: usize = 2000;
    raise_own_fd_limit(IDLE as u64 + 200);
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(
        &double.url(),
        &[
            (
                "crowded",
                "max_connections = 2000\nrequest_header_timeout = \"10m\"",
            ),
            ("quiet", ""),
        ],
        "",
    ))
    .await;
    let crowded = socket(&host, "crowded");
    // Plain connections that send nothing (blocking connects wait for the backlog).
    let idle = tokio::task::spawn_blocking({
        let p = crowded.clone();
        move || {
            (0..IDLE)
                .map(|_| std::os::unix::net::UnixStream::connect(&p).unwrap())
                .collect::<Vec<_>>()
        }
    })
    .await
    .unwrap();
    assert_eq!(idle.len(), IDLE);

    // The other listener serves as usual.
    let r = raw_unix(&socket(&host, "quiet"), GET_VERSION)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200);

    // The crowded one answers a connection over max_connections with 503 and closes it.
    // A blocking connect, as above: under load the daemon may still be accepting the
    // idle ones, and a non-blocking connect to a full backlog fails with EAGAIN.
    let blocking = tokio::task::spawn_blocking({
        let p = crowded.clone();
        move || std::os::unix::net::UnixStream::connect(&p).unwrap()
    })
    .await
    .unwrap();
    blocking.set_nonblocking(true).unwrap();
    let mut s = UnixStream::from_std(blocking).unwrap();
    s.write_all(GET_VERSION).await.unwrap();
    let r = response_on(&mut s).await; // a 503, not a hang
    assert_eq!(r.status, 503);
    assert_eq!(r.header("connection"), Some("close"));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("sandbox \"crowded\" has 2000 open connections (max_connections)"),
        "{msg}"
    );
    assert!(
        read_until_close(&mut s).await.is_empty(),
        "closed after the 503"
    );

    // The refusal is logged (at most once per 10 s per listener), not audited.
    assert!(host.log().contains("connection limit reached"));
    assert!(host.audit_records().iter().all(|r| r["sandbox"] == "quiet"));
    drop(idle);
}
