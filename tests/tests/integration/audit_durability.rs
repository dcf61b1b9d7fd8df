//! When audit records are written, and what survives: a refusal's record before its
//! 403, an answer's record before the answer completes (with a writer slower than the
//! answers), every completed request's whole record after SIGKILL under load, one record
//! for requests cut off by shutdown, and SIGHUP reopening the file for logrotate.

use std::collections::HashSet;

use bridge_tests::double::{Double, DoubleConfig, Script};
use bridge_tests::harness::{config, socket, Host};
use bridge_tests::http::{collect, next_data, post, req, send_unix, GUARD, REQUEST_ID};
use bridge_tests::native::chat;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

const ALPHA: &str = "models = [\"qwen2.5:7b\", \"llama3.2:*\"]\nendpoints = [\"chat\", \"generate\", \"embed\", \"list\"]";
const PIN: &str = "[model.\"qwen2.5:7b\"]\nnum_ctx = 8192\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_is_in_the_file_before_its_403_arrives() {
    let double = Double::start(DoubleConfig::default()).await;
    let host = Host::start(&config(&double.url(), &[("alpha", ALPHA)], "")).await;
    let sock = socket(&host, "alpha");
    for body in [
        chat("llama3.3:70b", json!({})),
        chat("gpt-oss:120b-cloud", json!({})),
    ] {
        let resp = send_unix(&sock, post("/api/chat", &body)).await.unwrap();
        assert_eq!(resp.status(), 403);
        // Only the head has arrived; the body is not even read yet.
        let id = resp.headers()[REQUEST_ID].to_str().unwrap().to_owned();
        let records = host.audit_records();
        let r = records
            .iter()
            .find(|r| r["request_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no record for {id} when its 403 arrived: {records:?}"));
        assert_eq!(r["decision"], "deny");
        assert_eq!(r["status"], 403);
    }
    assert!(double.requests().is_empty());
}

/// The audit "file" as a FIFO read at a limited pace by a thread: a writer slower than
/// the answers. `drain` takes whatever is in the pipe right now.
struct SlowReader {
    buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    file: std::sync::Arc<std::fs::File>,
}

impl SlowReader {
    fn open(path: &std::path::Path) -> SlowReader {
        use std::os::unix::fs::OpenOptionsExt;
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(path)
            .unwrap();
        let r = SlowReader {
            buf: Default::default(),
            stop: Default::default(),
            file: std::sync::Arc::new(file),
        };
        let (buf, stop, file) = (r.buf.clone(), r.stop.clone(), r.file.clone());
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                {
                    // Read under the lock, so `drain` never slips bytes in between.
                    let mut buf = buf.lock().unwrap();
                    if let Ok(n) = std::io::Read::read(&mut &*file, &mut chunk) {
                        buf.extend_from_slice(&chunk[..n]);
                    }
                }
                // The pace: at most 8 KiB per millisecond.
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        r
    }

    /// Everything written so far (what is in the pipe now, plus what was read).
    fn drain(&self) -> Vec<u8> {
        let mut buf = self.buf.lock().unwrap();
        let mut chunk = [0u8; 65536];
        while let Ok(n @ 1..) = std::io::Read::read(&mut &*self.file, &mut chunk) {
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.clone()
    }

    /// Bytes the paced thread has read so far (without speeding the writer up).
    fn paced(&self) -> usize {
        self.buf.lock().unwrap().len()
    }

    fn has_record(&self, id: &str) -> bool {
        self.drain()
            .split(|&b| b == b'\n')
            .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
            .any(|r| r["request_id"] == id)
    }
}

impl Drop for SlowReader {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_complete_only_after_their_records_are_written_by_a_slow_writer() {
    let dir = tempfile::tempdir().unwrap();
    let reader = SlowReader::open(&dir.path().join("audit.jsonl"));
    let double = Double::start(DoubleConfig::default()).await;
    let cfg = config(&double.url(), &[("alpha", ALPHA)], "")
        .replace("[audit]\n", "[audit]\nlog_prompts = true\n");
    let host = Host::start_in(dir, &cfg, &[]).await;
    let sock = socket(&host, "alpha");
    // Half a megabyte of prompt: its record takes the slow writer dozens of pipe-fulls.
    let big = "lorem ipsum ".repeat(512 * 1024 / 12);
    for stream in [false, true] {
        let body = json!({"model": "qwen2.5:7b", "stream": stream, "messages": [{"role": "user", "content": big}]});
        let resp = send_unix(&sock, post("/api/chat", &body)).await.unwrap();
        let id = resp.headers()[REQUEST_ID].to_str().unwrap().to_owned();
        let (status, _, _) = collect(resp).await;
        assert_eq!(status, 200);
        assert!(
            reader.has_record(&id),
            "the answer completed before its record was written"
        );
    }
    // A refusal queued behind a big record is answered only after its own record.
    let before = reader.drain().len();
    let slow = {
        let sock = sock.clone();
        let body = json!({"model": "qwen2.5:7b", "stream": false, "messages": [{"role": "user", "content": big}]});
        tokio::spawn(async move {
            collect(send_unix(&sock, post("/api/chat", &body)).await.unwrap()).await
        })
    };
    // The writer is in the middle of that record once the paced reader sees its start.
    tokio::time::timeout(GUARD, async {
        while reader.paced() <= before {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the big record is being written");
    let resp = send_unix(&sock, post("/api/chat", &chat("llama3.3:70b", json!({}))))
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let id = resp.headers()[REQUEST_ID].to_str().unwrap().to_owned();
    assert!(
        reader.has_record(&id),
        "the 403 left before its record was written"
    );
    slow.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cut_off_by_shutdown_still_get_one_record() {
    let double = Double::start(DoubleConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut host = Host::start_in(
        dir,
        &config(&double.url(), &[("alpha", ALPHA)], ""),
        &["--grace", "0"],
    )
    .await;
    let sock = socket(&host, "alpha");
    // One stream held after its first chunk...
    double.set_script(Script {
        gated: true,
        ..Script::default()
    });
    let resp = send_unix(&sock, post("/api/chat", &chat("qwen2.5:7b", json!({}))))
        .await
        .unwrap();
    let streaming = resp.headers()[REQUEST_ID].to_str().unwrap().to_owned();
    let mut body = resp.into_body();
    next_data(&mut body).await.expect("first chunk");
    // ...and one request still waiting for Ollama's headers.
    double.set_script(Script {
        stall_headers: true,
        ..Script::default()
    });
    let waiting = tokio::spawn({
        let sock = sock.clone();
        async move { send_unix(&sock, post("/api/chat", &chat("llama3.2:3b", json!({})))).await }
    });
    tokio::time::timeout(GUARD, async {
        while double.requests().len() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the second request reached Ollama");

    host.signal(nix::sys::signal::Signal::SIGTERM);
    let status = tokio::time::timeout(GUARD, host.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{}", host.log());
    assert!(waiting.await.unwrap().is_err(), "no answer came");

    let records = host.audit_records();
    assert_eq!(records.len(), 2, "{records:#?}");
    let s = records
        .iter()
        .find(|r| r["request_id"] == streaming.as_str())
        .unwrap();
    assert_eq!(s["status"], 200, "the status sent: {s}");
    assert_eq!(s["reason"], "shutting_down");
    assert!(s["bytes_out"].as_u64().unwrap() > 0);
    let w = records
        .iter()
        .find(|r| r["request_id"] != streaming.as_str())
        .unwrap();
    assert_eq!(w["model"], "llama3.2:3b");
    assert_eq!(w["decision"], "allow");
    assert_eq!(w["status"], 0, "nothing was sent: {w}");
    assert_eq!(w["reason"], "shutting_down");
}

/// A request that never completes (or fails) before the kill; None when the daemon died.
async fn complete(sock: &std::path::Path, r: http::Request<Full<Bytes>>) -> Option<String> {
    let s = tokio::net::UnixStream::connect(sock).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .ok()?;
    tokio::spawn(conn);
    let resp = sender.send_request(r).await.ok()?;
    let id = resp.headers().get(REQUEST_ID)?.to_str().ok()?.to_owned();
    // Complete means the whole body arrived, end of stream included.
    resp.into_body().collect().await.ok()?;
    Some(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_completed_record_and_tears_no_line() {
    let double = Double::start(DoubleConfig::default()).await;
    // Streams stop after their first chunk (gated); stream:false answers are immediate.
    double.set_script(Script {
        gated: true,
        ..Script::default()
    });
    let mut host = Host::start(&config(&double.url(), &[("load", ALPHA)], PIN)).await;
    let sock = socket(&host, "load");

    let mut held = Vec::new();
    for _ in 0..3 {
        let resp = send_unix(&sock, post("/api/chat", &chat("qwen2.5:7b", json!({}))))
            .await
            .unwrap();
        let id = resp.headers()[REQUEST_ID].to_str().unwrap().to_owned();
        let mut body = resp.into_body();
        next_data(&mut body)
            .await
            .expect("first chunk of a held stream");
        held.push((id, body));
    }

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut workers = Vec::new();
    for w in 0..3 {
        let (tx, sock) = (tx.clone(), sock.clone());
        workers.push(tokio::spawn(async move {
            for i in 0u64.. {
                let body = if (i + w) % 3 == 0 {
                    chat("llama3.3:70b", json!({})) // denied: written before the 403
                } else {
                    chat("qwen2.5:7b", json!({"stream": false}))
                };
                match complete(&sock, post("/api/chat", &body)).await {
                    Some(id) => {
                        let _ = tx.send(id);
                    }
                    None => return,
                }
            }
        }));
    }
    drop(tx);
    let mut done = Vec::new();
    while done.len() < 60 {
        done.push(
            tokio::time::timeout(GUARD, rx.recv())
                .await
                .unwrap()
                .expect("load running"),
        );
    }
    host.signal(nix::sys::signal::Signal::SIGKILL);
    tokio::time::timeout(GUARD, host.child.wait())
        .await
        .unwrap()
        .unwrap();
    // Workers end on their next failure; whatever completed meanwhile counts too.
    while let Some(id) = tokio::time::timeout(GUARD, rx.recv()).await.unwrap() {
        done.push(id);
    }
    for w in workers {
        w.await.unwrap();
    }

    let text = std::fs::read_to_string(&host.audit).unwrap();
    assert!(text.ends_with('\n'), "the last line is whole");
    let mut seen = HashSet::new();
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}"));
        let r: protocol::audit::AuditRecord = serde_json::from_value(v).expect("a whole record");
        assert!(
            seen.insert(r.request_id.clone()),
            "two records for {}",
            r.request_id
        );
    }
    for id in &done {
        assert!(
            seen.contains(id),
            "request {id} completed but has no record"
        );
    }
    for (id, _) in &held {
        assert!(!seen.contains(id), "held stream {id} cannot have finished");
    }
    assert!(done.len() >= 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_the_audit_file_for_logrotate() {
    let double = Double::start(DoubleConfig::default()).await;
    let mut host = Host::start(&config(&double.url(), &[("alpha", ALPHA)], "")).await;
    let sock = socket(&host, "alpha");
    let id = |resp: &http::Response<hyper::body::Incoming>| {
        resp.headers()[REQUEST_ID].to_str().unwrap().to_owned()
    };
    let tags = || req("GET", "/api/tags", "");
    let resp = send_unix(&sock, tags()).await.unwrap();
    let a = id(&resp);
    collect(resp).await;
    let rotated = host.audit.with_extension("jsonl.1");
    std::fs::rename(&host.audit, &rotated).unwrap();
    // Until SIGHUP the daemon appends to the file it has open (now the rotated one).
    let resp = send_unix(&sock, tags()).await.unwrap();
    let b = id(&resp);
    collect(resp).await;
    assert!(!host.audit.exists());

    host.signal(nix::sys::signal::Signal::SIGHUP);
    // The daemon creates the file at the configured path when it reopens.
    tokio::time::timeout(GUARD, async {
        while !host.audit.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("audit file reopened after SIGHUP: {}", host.log()));
    let resp = send_unix(&sock, tags()).await.unwrap();
    let c = id(&resp);
    collect(resp).await;

    let ids = |p: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["request_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(ids(&rotated), [a, b]);
    assert_eq!(ids(&host.audit), [c]);
    assert!(host.log().contains("audit log reopened"), "{}", host.log());

    // At exit the daemon says how many records it wrote and dropped.
    host.signal(nix::sys::signal::Signal::SIGTERM);
    let status = tokio::time::timeout(GUARD, host.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let log = host.log();
    let last = log
        .lines()
        .rfind(|l| l.contains("audit log closed"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(last.contains("written=3 dropped=0"), "{last}");
}
