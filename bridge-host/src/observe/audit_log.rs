//! The audit writer: its own thread appending whole JSON lines to the audit file,
//! fed through a bounded queue so a slow disk never stalls a response for long.
//! Each batch is one `write` of whole lines on an `O_APPEND` file, so lines from
//! concurrent writers never interleave. A record that cannot be queued or written is
//! counted and logged, never dropped silently; the count is kept for metrics.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use protocol::audit::AuditRecord;
use tokio::sync::oneshot;

/// Records queued at most before new ones are dropped (and counted).
pub const QUEUE: usize = 65_536;
/// Bytes queued at most (prompts can be large) before new records are dropped.
pub const QUEUE_BYTES: u64 = 64 << 20;
/// Longest wait for a record to be written before a response completes anyway.
pub const ACK_WAIT: Duration = Duration::from_secs(2);
/// Largest single append.
const BATCH: usize = 1 << 20;

enum Msg {
    Line(Vec<u8>, Option<oneshot::Sender<()>>),
    /// Wakes the writer (to look at the reopen flag).
    Wake,
    /// Everything queued before is written; then this fires.
    Flush(SyncSender<()>),
}

/// Counters shared by the handles and the writer thread.
#[derive(Default)]
struct Counters {
    dropped: AtomicU64,
    written: AtomicU64,
    queued_bytes: AtomicU64,
    reopen: AtomicBool,
}

/// A handle to the audit writer; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: SyncSender<Msg>,
    counters: Arc<Counters>,
    path: Arc<PathBuf>,
}

impl AuditLog {
    /// Opens (creating) the audit file and starts the writer thread.
    pub fn open(path: &Path) -> io::Result<AuditLog> {
        let file = open_file(path)?;
        let (tx, rx) = sync_channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let path = Arc::new(path.to_owned());
        let (c, p) = (counters.clone(), path.clone());
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                crate::os::privileges::confine_thread();
                writer(rx, file, &p, &c)
            })?;
        Ok(AuditLog { tx, counters, path })
    }

    /// Queues a record. With `ack`, the returned receiver fires once the line is written
    /// (or its write failed); `None` when the record was dropped. Only the request's
    /// `Exchange` (in the proxy layer) calls this, once per request.
    pub fn submit(&self, rec: &AuditRecord, ack: bool) -> Option<oneshot::Receiver<()>> {
        let mut line = match serde_json::to_vec(rec) {
            Ok(l) => l,
            Err(e) => {
                self.count_drop(&rec.request_id, "cannot serialise the record");
                tracing::error!(error = %e, "cannot serialise audit record");
                return None;
            }
        };
        line.push(b'\n');
        let len = line.len() as u64;
        let queued = self.counters.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if queued + len > QUEUE_BYTES && queued > 0 {
            self.counters.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.count_drop(&rec.request_id, "the audit queue is full (bytes)");
            return None;
        }
        let (atx, arx) = if ack {
            let (t, r) = oneshot::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        match self.tx.try_send(Msg::Line(line, atx)) {
            Ok(()) => arx,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                self.count_drop(&rec.request_id, "the audit queue is full");
                None
            }
        }
    }

    fn count_drop(&self, request_id: &str, why: &str) {
        let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::error!(
            dropped_total = n,
            request_id = %request_id,
            path = %self.path.display(),
            why,
            "audit record DROPPED: the audit writer is not keeping up (slow or full disk?)"
        );
    }

    /// Asks the writer to reopen the file (after logrotate moved it). Never lost: the
    /// flag is looked at before every append even when the wake-up cannot be queued.
    pub fn reopen(&self) {
        self.counters.reopen.store(true, Ordering::SeqCst);
        let _ = self.tx.try_send(Msg::Wake);
    }

    /// Waits (at most `wait`) until everything queued so far is written, then logs the
    /// counters. For shutdown.
    pub fn close(&self, wait: Duration) {
        let (tx, rx) = sync_channel(1);
        let flushed = send_within(&self.tx, Msg::Flush(tx), wait) && rx.recv_timeout(wait).is_ok();
        let (written, dropped) = (self.written(), self.dropped());
        if dropped > 0 || !flushed {
            tracing::error!(written, dropped, flushed, path = %self.path.display(), "audit log closed; records were LOST");
        } else {
            tracing::info!(written, dropped, path = %self.path.display(), "audit log closed");
        }
    }

    /// Records dropped since start (queue full, or the write failed). For metrics.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Records written since start. For metrics.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `SyncSender` has no `send_timeout`: retries `try_send` until the deadline.
fn send_within(tx: &SyncSender<Msg>, mut msg: Msg, wait: Duration) -> bool {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match tx.try_send(msg) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(m)) => {
                if std::time::Instant::now() >= deadline {
                    return false;
                }
                msg = m;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// `path` is `-` (`[audit] path = "-"`): the records go to standard output.
fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == protocol::config::AUDIT_TO_STDOUT
}

/// Opens the file for appending. A file that does not end with a newline (a crash cut
/// its last line) gets one first, so the next record starts on a line of its own.
/// `-` is a copy of standard output (a pipe to a container's log, usually): nothing to
/// create, seek or reopen there.
fn open_file(path: &Path) -> io::Result<File> {
    if is_stdout(path) {
        use std::os::fd::AsFd;
        let fd = io::stdout().as_fd().try_clone_to_owned().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot write the audit log to standard output: {e}"),
            )
        })?;
        return Ok(File::from(fd));
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
        }
    }
    let named = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("cannot open audit log {}: {e}", path.display()),
        )
    };
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(named)?;
    let len = file.metadata().map_err(named)?.len();
    if len > 0 {
        let mut last = [0u8];
        file.seek(SeekFrom::Start(len - 1)).map_err(named)?;
        file.read_exact(&mut last).map_err(named)?;
        if last[0] != b'\n' {
            tracing::warn!(path = %path.display(), "the audit log's last line is incomplete (a crash?); starting a new line");
            file.write_all(b"\n").map_err(named)?;
        }
    }
    Ok(file)
}

fn writer(rx: Receiver<Msg>, mut file: File, path: &Path, counters: &Counters) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut acks = Vec::new();
    let mut flushes = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        // Batch whatever is already queued into one append of whole lines.
        while let Some(msg) = next {
            match msg {
                Msg::Line(line, ack) => {
                    counters
                        .queued_bytes
                        .fetch_sub(line.len() as u64, Ordering::Relaxed);
                    buf.extend_from_slice(&line);
                    acks.extend(ack);
                }
                Msg::Wake => {}
                Msg::Flush(done) => flushes.push(done),
            }
            next = if buf.len() < BATCH && flushes.is_empty() {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let reopen = counters.reopen.swap(false, Ordering::SeqCst);
        if reopen && is_stdout(path) {
            tracing::info!("the audit log is standard output: nothing to reopen");
        } else if reopen {
            // Lines queued before the signal go to the new file too: they are not yet
            // written, and the new file is the one operators will read from now on.
            match open_file(path) {
                Ok(f) => {
                    file = f;
                    tracing::info!(path = %path.display(), "audit log reopened");
                }
                Err(e) => {
                    let dir = path.parent().unwrap_or(Path::new("."));
                    let hint = crate::os::privileges::hint(&format!(
                        "{} must be writable by that user to reopen the audit log",
                        dir.display()
                    ));
                    tracing::error!(error = %e, "audit log reopen failed; still writing to the old file{hint}")
                }
            }
        }
        if !buf.is_empty() {
            let lines = buf.iter().filter(|&&b| b == b'\n').count() as u64;
            match file.write_all(&buf) {
                Ok(()) => {
                    counters.written.fetch_add(lines, Ordering::Relaxed);
                }
                Err(e) => {
                    let n = counters.dropped.fetch_add(lines, Ordering::Relaxed) + lines;
                    tracing::error!(error = %e, path = %path.display(), lost = lines, dropped_total = n, "audit write failed; records LOST")
                }
            }
            buf.clear();
        }
        for a in acks.drain(..) {
            let _ = a.send(());
        }
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
    }
}

#[cfg(test)]
mod tests {
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
        for i in 0..50 {
            let id = format!("r{i}");
            log.submit(&rec(&id), true).unwrap().await.unwrap();
            assert_eq!(lines(&path).last().unwrap().request_id, id);
        }
        assert_eq!(log.written(), 50);
        assert_eq!(log.dropped(), 0);
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
                            log.submit(&r, false);
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
        let ids: std::collections::HashSet<String> =
            got.into_iter().map(|r| r.request_id).collect();
        assert_eq!(ids.len(), 2 * 3 * 300);
    }

    #[test]
    fn a_cut_last_line_is_isolated_on_reopen() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("audit.jsonl");
        std::fs::write(&path, "{\"ts\":\"2026-11-21T14:0").unwrap();
        let log = AuditLog::open(&path).unwrap();
        log.submit(&rec("after-crash"), false);
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
        log.submit(&rec("before"), false);
        log.close(Duration::from_secs(10));
        let rotated = t.path().join("audit.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.submit(&rec("late"), false); // still the old file: no reopen yet
        log.close(Duration::from_secs(10));
        log.reopen();
        log.submit(&rec("after"), false);
        log.close(Duration::from_secs(10));
        let ids =
            |p: &Path| -> Vec<String> { lines(p).into_iter().map(|r| r.request_id).collect() };
        assert_eq!(ids(&rotated), ["before", "late"]);
        assert_eq!(ids(&path), ["after"]);
    }
}
