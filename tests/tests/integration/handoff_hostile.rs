//! The connection hand-off against a hostile guest: a stand-in negotiates on the unix
//! socket, then passes what no bridge-guest would (files, pipes, unix, listening and UDP
//! sockets, floods of descriptors, foreign control messages, data without a
//! descriptor). Each is refused and closes the control connection, is counted, audited
//! where a descriptor arrived, and the daemon keeps serving.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use bridge_tests::double::{Double, DoubleConfig};
use bridge_tests::harness::{config, socket, Host};
use bridge_tests::http::{collect, raw_unix, req, send_unix, GET_VERSION, GUARD};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixCredentials};
use protocol::handoff::{AGREE, FD_BYTE, PREAMBLE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

pub(crate) async fn scrape(host: &Host) -> String {
    let path = host.path("metrics.sock");
    let resp = send_unix(&path, req("GET", "/metrics", "")).await.unwrap();
    let (s, _, body) = collect(resp).await;
    assert_eq!(s, 200);
    String::from_utf8(body.to_vec()).unwrap()
}

/// The value of one sample line, 0 when absent.
pub(crate) fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// A host with sandbox "agent" (hand-off on by default) and the metrics listener.
pub(crate) async fn host_with(double: &Double, keys: &str) -> Host {
    Host::start(&config(
        &double.url(),
        &[("agent", keys)],
        "[metrics]\nlisten = \"unix:{dir}/metrics.sock\"\n",
    ))
    .await
}

/// A control connection the host agreed to.
async fn control(sock: &Path) -> UnixStream {
    let mut s = UnixStream::connect(sock).await.unwrap();
    s.write_all(PREAMBLE).await.unwrap();
    let mut answer = vec![0u8; AGREE.len()];
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer, AGREE);
    s
}

/// Sends one message: `data` with `fds` (if any) and `creds` (if asked).
fn send(ctl: &UnixStream, data: &[u8], fds: &[RawFd], creds: bool) -> nix::Result<usize> {
    let own = UnixCredentials::new();
    let mut cmsgs = Vec::new();
    if !fds.is_empty() {
        cmsgs.push(ControlMessage::ScmRights(fds));
    }
    if creds {
        cmsgs.push(ControlMessage::ScmCredentials(&own));
    }
    let iov = [IoSlice::new(data)];
    sendmsg::<()>(ctl.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None)
}

/// Waits until the host closes the control connection (it never writes after agreeing).
async fn closed(mut ctl: UnixStream) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(GUARD, ctl.read_to_end(&mut rest)).await;
    // A reset (the host closed with our messages unread) is a close too.
    assert!(read.is_ok(), "the host closed the control connection");
    assert!(rest.is_empty(), "the host wrote after agreeing: {rest:?}");
}

fn refused_records(host: &Host) -> usize {
    host.audit_records()
        .iter()
        .filter(|r| r["reason"] == "handoff_refused")
        .count()
}

async fn still_serves(sock: &Path) {
    let r = raw_unix(sock, GET_VERSION).await.unwrap().unwrap();
    assert_eq!(r.status, 200);
}

fn open_fds(host: &Host) -> usize {
    let pid = host.child.id().expect("running");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_other_than_connected_tcp_streams_are_refused_counted_and_audited() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = host_with(&double, "").await;
    let sock = socket(&host, "agent");
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("f")).unwrap();
    let (pipe_r, _pipe_w) = nix::unistd::pipe().unwrap();
    let (unix, _other) = std::os::unix::net::UnixStream::pair().unwrap();
    let listening = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(listening.local_addr().unwrap()).unwrap(); // connected, still not TCP
    let unconnected = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::empty(),
        None,
    )
    .unwrap();
    let cases: [(&str, RawFd, &str); 6] = [
        ("a regular file", file.as_raw_fd(), "not_a_socket"),
        ("a pipe", pipe_r.as_raw_fd(), "not_a_socket"),
        ("a unix socket", unix.as_raw_fd(), "not_inet"),
        ("a listening TCP socket", listening.as_raw_fd(), "listening"),
        ("a UDP socket", udp.as_raw_fd(), "not_tcp_stream"),
        (
            "an unconnected TCP socket",
            unconnected.as_raw_fd(),
            "not_connected",
        ),
    ];
    for (i, (what, fd, why)) in cases.into_iter().enumerate() {
        let ctl = control(&sock).await;
        send(&ctl, &[FD_BYTE], &[fd], false).unwrap();
        closed(ctl).await;
        let m = scrape(&host).await;
        let refused =
            format!("ollama_bridge_handoff_refused_total{{sandbox=\"agent\",why=\"{why}\"}}");
        assert!(sample(&m, &refused) >= 1.0, "{what}: {refused} in\n{m}");
        assert_eq!(refused_records(&host), i + 1, "{what}: one record each");
        still_serves(&sock).await;
    }
    let rec = host
        .audit_records()
        .into_iter()
        .find(|r| r["reason"] == "handoff_refused")
        .unwrap();
    assert_eq!(rec["sandbox"], "agent");
    assert_eq!(rec["decision"], "deny");
    assert_eq!(rec["peer"]["uid"], nix::unistd::getuid().as_raw());
    assert_eq!(rec["peer"]["pid"], std::process::id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_control_connection_closes_it_and_is_counted() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = host_with(&double, "").await;
    let sock = socket(&host, "agent");
    let tcp_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp = std::net::TcpStream::connect(tcp_listener.local_addr().unwrap()).unwrap();
    let closed_metric = |why: &str| {
        format!("ollama_bridge_handoff_controls_closed_total{{sandbox=\"agent\",why=\"{why}\"}}")
    };

    // Data with no descriptor.
    let ctl = control(&sock).await;
    send(&ctl, &[FD_BYTE], &[], false).unwrap();
    closed(ctl).await;
    assert_eq!(
        sample(&scrape(&host).await, &closed_metric("no_descriptor")),
        1.0
    );

    // Credentials instead of a descriptor (the host does not ask for them: the kernel
    // drops them, and what is left is data without a descriptor).
    let ctl = control(&sock).await;
    send(&ctl, &[FD_BYTE], &[], true).unwrap();
    closed(ctl).await;
    assert_eq!(
        sample(&scrape(&host).await, &closed_metric("no_descriptor")),
        2.0
    );

    // A good descriptor with the wrong data byte.
    let ctl = control(&sock).await;
    send(&ctl, b"X", &[tcp.as_raw_fd()], false).unwrap();
    closed(ctl).await;
    assert_eq!(sample(&scrape(&host).await, &closed_metric("garbage")), 1.0);

    // Two descriptors in one message: the host has room for one (MSG_CTRUNC).
    let ctl = control(&sock).await;
    send(&ctl, &[FD_BYTE], &[tcp.as_raw_fd(), tcp.as_raw_fd()], false).unwrap();
    closed(ctl).await;
    assert_eq!(
        sample(&scrape(&host).await, &closed_metric("truncated")),
        1.0
    );

    // A preamble gone wrong.
    let mut bad = UnixStream::connect(&sock).await.unwrap();
    bad.write_all(b"\0ollama-bridge handoff 9\n").await.unwrap();
    closed(bad).await;
    assert_eq!(
        sample(&scrape(&host).await, &closed_metric("bad_preamble")),
        1.0
    );

    // Not one was served, the refused descriptors were audited, the daemon serves.
    let handed = "ollama_bridge_handoff_connections_total{sandbox=\"agent\"}";
    assert_eq!(sample(&scrape(&host).await, handed), 0.0);
    assert_eq!(
        refused_records(&host),
        2,
        "the wrong byte and the truncation"
    );
    still_serves(&sock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_descriptors_leave_nothing_open() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = host_with(&double, "").await;
    let sock = socket(&host, "agent");
    let (pipe_r, _pipe_w) = nix::unistd::pipe().unwrap();
    still_serves(&sock).await;
    let before = open_fds(&host);

    // Many in one message: the kernel installs what fits, the host closes it all.
    let many = vec![pipe_r.as_raw_fd(); 250];
    let ctl = control(&sock).await;
    send(&ctl, &[FD_BYTE], &many, false).unwrap();
    closed(ctl).await;

    // Many messages: the first closes the control connection; the kernel closes the
    // descriptors of the rest with it.
    let ctl = control(&sock).await;
    let mut sent = 0;
    for _ in 0..200 {
        if send(&ctl, &[FD_BYTE], &many[..1], false).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent > 0);
    closed(ctl).await;
    assert!(
        open_fds(&host) <= before,
        "descriptors leaked: {} open, {before} before",
        open_fds(&host)
    );
    let m = scrape(&host).await;
    let truncated =
        "ollama_bridge_handoff_controls_closed_total{sandbox=\"agent\",why=\"truncated\"}";
    assert_eq!(sample(&m, truncated), 1.0, "{m}");
    still_serves(&sock).await;
}
