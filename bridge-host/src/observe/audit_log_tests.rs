//! The audit log's unit tests: acknowledgements, appends from the caller and from the
//! writer thread, concurrent writers, a crash's cut line, reopening.

use super::*;
use protocol::audit::{Decision, Peer};

fn rec(id: &str) -> AuditRecord {
    let peer = Some(Peer::Unix {
        uid: 1,
        gid: 2,
        pid: Some(3),
    });
    let mut r = AuditRecord::new(
        0,
        id.into(),
        "a".into(),
        peer,
        "POST".into(),
        "/api/chat".into(),
    );
    r.endpoint = Some(protocol::route::EndpointClass::Chat.into());
    r.model = Some("qwen2.5:7b".into());
    r.decision = Decision::Allow;
    (r.status, r.bytes_in, r.bytes_out, r.duration_ms) = (200, 1, 2, 3);
    r
}

fn lines(path: &Path) -> Vec<AuditRecord> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_fires_after_the_line_is_in_the_file() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("sub/audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    let big = "x".repeat(INLINE_MAX);
    let mut by_caller = 0;
    for i in 0..50 {
        let id = format!("r{i}");
        let mut r = rec(&id);
        // Every third one too long to be appended by the caller: queued.
        if i % 3 == 0 {
            r.output = Some(big.clone());
        }
        match log.submit(&r) {
            Some(ack) => ack.await.unwrap(),
            None => {
                assert_ne!(i % 3, 0, "a long line is queued");
                by_caller += 1;
            }
        }
        assert_eq!(lines(&path).last().unwrap().request_id, id);
    }
    // Short lines are appended by their callers (on a loaded machine one may have
    // looked slow and sent a few after it to the writer thread).
    assert!(by_caller > 0);
    assert_eq!(log.written(), 50);
    assert_eq!(log.dropped(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_append_or_a_file_that_is_not_regular_sends_records_to_the_writer() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    assert!(log.submit(&rec("quick")).is_none());
    // A request's append took 5 ms: the next records are queued...
    log.inner.timed(Duration::from_millis(5), 1, false);
    log.submit(&rec("after-slow"))
        .expect("queued")
        .await
        .unwrap();
    // ...until an append by the writer thread was quick (as that one was, unless the
    // machine is very busy: this one surely is).
    log.inner.timed(Duration::ZERO, 1, true);
    assert!(log.submit(&rec("writer-was-quick")).is_none());
    // The writer thread's append took 5 ms: queued for the next second.
    log.inner.timed(Duration::from_millis(5), 1, true);
    assert!(log.submit(&rec("writer-was-slow")).is_some());
    log.close(Duration::from_secs(10));
    let ids: Vec<String> = lines(&path).into_iter().map(|r| r.request_id).collect();
    assert_eq!(
        ids,
        ["quick", "after-slow", "writer-was-quick", "writer-was-slow"]
    );
    // A FIFO (its reader may be slow): always the writer thread.
    let fifo = t.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let log = AuditLog::open(&fifo).unwrap();
    let mut reader = std::fs::File::open(&fifo).unwrap();
    log.submit(&rec("piped")).expect("queued").await.unwrap();
    let mut got = vec![0u8; 4096];
    let n = reader.read(&mut got).unwrap();
    let r: AuditRecord = serde_json::from_slice(&got[..n]).unwrap();
    assert_eq!(r.request_id, "piped");
}

#[test]
fn concurrent_writers_on_one_file_never_tear_lines() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("audit.jsonl");
    // Two writers (as two daemons would be) and several submitting threads each.
    let logs = [
        AuditLog::open(&path).unwrap(),
        AuditLog::open(&path).unwrap(),
    ];
    let big = "x".repeat(10_000);
    std::thread::scope(|s| {
        for (w, log) in logs.iter().enumerate() {
            for th in 0..3 {
                let big = &big;
                s.spawn(move || {
                    for i in 0..300 {
                        let mut r = rec(&format!("w{w}-t{th}-{i}"));
                        if i % 7 == 0 {
                            r.output = Some(big.clone());
                        }
                        log.submit(&r);
                    }
                });
            }
        }
    });
    for l in &logs {
        l.close(Duration::from_secs(30));
        assert_eq!(l.dropped(), 0);
    }
    let got = lines(&path);
    assert_eq!(got.len(), 2 * 3 * 300);
    let ids: std::collections::HashSet<String> = got.into_iter().map(|r| r.request_id).collect();
    assert_eq!(ids.len(), 2 * 3 * 300);
}

#[test]
fn a_cut_last_line_is_isolated_on_reopen() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("audit.jsonl");
    std::fs::write(&path, "{\"ts\":\"2026-11-21T14:0").unwrap();
    let log = AuditLog::open(&path).unwrap();
    log.submit(&rec("after-crash"));
    log.close(Duration::from_secs(10));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut it = text.lines();
    assert_eq!(it.next(), Some("{\"ts\":\"2026-11-21T14:0"));
    let r: AuditRecord = serde_json::from_str(it.next().unwrap()).unwrap();
    assert_eq!(r.request_id, "after-crash");
}

#[test]
fn reopen_follows_the_path_after_a_rename() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    log.submit(&rec("before"));
    log.close(Duration::from_secs(10));
    let rotated = t.path().join("audit.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    log.submit(&rec("late")); // still the old file: no reopen yet
    log.close(Duration::from_secs(10));
    log.reopen();
    log.submit(&rec("after"));
    log.close(Duration::from_secs(10));
    let ids = |p: &Path| -> Vec<String> { lines(p).into_iter().map(|r| r.request_id).collect() };
    assert_eq!(ids(&rotated), ["before", "late"]);
    assert_eq!(ids(&path), ["after"]);
}
