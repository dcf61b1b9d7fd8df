//! The audit log: whole JSON lines appended to the audit file with one `write(2)` each
//! on an `O_APPEND` fd, so lines from concurrent writers never interleave. A record is
//! written from the request's own task when that cannot hold the task's worker for long
//! (a regular file, a line of at most [`INLINE_MAX`], the file not in use, no backlog, no
//! slow append in the last [`SLOW_BACKOFF`]); otherwise it goes to the writer thread
//! through a bounded queue, which batches whatever is queued into one append and
//! acknowledges each record, so a slow disk never stalls a response for long. A record
//! that cannot be queued or written is counted and logged, never dropped silently; the
//! count is kept for metrics.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use protocol::audit::AuditRecord;
use tokio::sync::oneshot;

/// Records queued at most before new ones are dropped (and counted).
pub const QUEUE: usize = 65_536;
/// Bytes queued at most (prompts can be large) before new records are dropped.
pub const QUEUE_BYTES: u64 = 64 << 20;
/// Longest wait for a queued record to be written before a response completes anyway.
pub const ACK_WAIT: Duration = Duration::from_secs(2);
/// Longest line a request's task appends itself (larger ones, with prompts, are queued).
pub const INLINE_MAX: usize = 64 << 10;
/// An append that took longer than this marks the disk slow...
const SLOW_WRITE: Duration = Duration::from_millis(1);
/// ...and requests queue their records for this long before appending themselves again.
pub const SLOW_BACKOFF: Duration = Duration::from_secs(1);
/// Times a request's task tries the file another append holds before queueing.
const SPINS: u32 = 200;
/// Largest single append.
const BATCH: usize = 1 << 20;

enum Msg {
    Line(Vec<u8>, Option<oneshot::Sender<()>>),
    /// Wakes the writer (to look at the reopen flag).
    Wake,
    /// Everything queued before is written; then this fires.
    Flush(SyncSender<()>),
}

/// The open file, shared by the writer thread and the requests' tasks.
struct Target {
    file: File,
    /// A regular file: an append of one buffer goes to the page cache and returns. Not
    /// one (a FIFO, a terminal) can block until its reader reads: only the writer
    /// thread writes it.
    regular: bool,
}

/// What the handles and the writer thread share.
struct Inner {
    target: Mutex<Target>,
    dropped: AtomicU64,
    written: AtomicU64,
    queued_bytes: AtomicU64,
    reopen: AtomicBool,
    /// Requests append themselves again from this time on (nanoseconds after `epoch`).
    slow_until: AtomicU64,
    epoch: Instant,
    path: PathBuf,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Target> {
        self.target.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// An append (of `lines` lines, by the writer thread or not) that took `took`: a
    /// slow one sends the records of the next [`SLOW_BACKOFF`] to the writer thread; a
    /// quick one by the writer thread ends that at once (a request's task may just have
    /// been preempted in the middle of its append).
    fn timed(&self, took: Duration, lines: u64, by_writer: bool) {
        if took <= SLOW_WRITE {
            if by_writer && self.slow_until.load(Ordering::Relaxed) > 0 {
                self.slow_until.store(0, Ordering::Relaxed);
            }
            return;
        }
        let now = self.now_ns();
        let before = self
            .slow_until
            .fetch_max(now + SLOW_BACKOFF.as_nanos() as u64, Ordering::Relaxed);
        if by_writer && before <= now {
            tracing::warn!(took_ms = took.as_millis() as u64, lines, path = %self.path.display(), "slow audit append: records go through the writer thread for a while");
        }
    }

    /// Counts the result of an append of `lines` lines.
    fn count(&self, res: io::Result<()>, lines: u64) {
        match res {
            Ok(()) => {
                self.written.fetch_add(lines, Ordering::Relaxed);
            }
            Err(e) => {
                let n = self.dropped.fetch_add(lines, Ordering::Relaxed) + lines;
                tracing::error!(error = %e, path = %self.path.display(), lost = lines, dropped_total = n, "audit write failed; records LOST")
            }
        }
    }
}

/// A handle to the audit log; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: SyncSender<Msg>,
    inner: Arc<Inner>,
}

impl AuditLog {
    /// Opens (creating) the audit file and starts the writer thread.
    pub fn open(path: &Path) -> io::Result<AuditLog> {
        let target = open_file(path)?;
        let (tx, rx) = sync_channel(QUEUE);
        let inner = Arc::new(Inner {
            target: Mutex::new(target),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            queued_bytes: AtomicU64::new(0),
            reopen: AtomicBool::new(false),
            slow_until: AtomicU64::new(0),
            epoch: Instant::now(),
            path: path.to_owned(),
        });
        let i = inner.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                crate::os::privileges::confine_thread();
                writer(rx, &i)
            })?;
        Ok(AuditLog { tx, inner })
    }

    /// Writes a record: appended from the caller's thread when that is quick and safe
    /// (`None`: written, or its write failed and was counted), else queued for the
    /// writer thread, whose receiver fires once the line is written (or its write
    /// failed); `None` too when the record was dropped. Only the request's `Exchange`
    /// (in the proxy layer) calls this, once per request.
    pub fn submit(&self, rec: &AuditRecord) -> Option<oneshot::Receiver<()>> {
        let mut line = match serde_json::to_vec(rec) {
            Ok(l) => l,
            Err(e) => {
                self.count_drop(&rec.request_id, "cannot serialise the record");
                tracing::error!(error = %e, "cannot serialise audit record");
                return None;
            }
        };
        line.push(b'\n');
        let line = match self.append_here(line) {
            Ok(()) => return None,
            Err(line) => line,
        };
        let len = line.len() as u64;
        let i = &self.inner;
        let queued = i.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if queued + len > QUEUE_BYTES && queued > 0 {
            i.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.count_drop(&rec.request_id, "the audit queue is full (bytes)");
            return None;
        }
        let (atx, arx) = oneshot::channel();
        match self.tx.try_send(Msg::Line(line, Some(atx))) {
            Ok(()) => Some(arx),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                i.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                self.count_drop(&rec.request_id, "the audit queue is full");
                None
            }
        }
    }

    /// Appends `line` with one `write(2)` from the caller's thread, when that holds the
    /// thread for no longer than a page-cache copy: a regular file, a short line, no
    /// reopen pending, nothing queued (the writer thread is not behind), no slow append
    /// lately, and the file not in use by anyone else (so a stalled disk holds at most
    /// one of the runtime's workers, for one append). Gives the line back otherwise.
    fn append_here(&self, line: Vec<u8>) -> Result<(), Vec<u8>> {
        let i = &self.inner;
        if line.len() > INLINE_MAX
            || i.reopen.load(Ordering::Relaxed)
            || i.queued_bytes.load(Ordering::Relaxed) > 0
            || i.now_ns() < i.slow_until.load(Ordering::Relaxed)
        {
            return Err(line);
        }
        // Another append in progress takes a few microseconds: spin that long, no more.
        let mut spins = 0;
        let target = loop {
            match i.target.try_lock() {
                Ok(t) => break t,
                Err(TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(TryLockError::WouldBlock) if spins < SPINS => {
                    spins += 1;
                    std::hint::spin_loop();
                }
                Err(TryLockError::WouldBlock) => return Err(line),
            }
        };
        if !target.regular {
            return Err(line);
        }
        let start = Instant::now();
        let res = (&target.file).write_all(&line);
        drop(target);
        i.timed(start.elapsed(), 1, false);
        i.count(res, 1);
        Ok(())
    }

    fn count_drop(&self, request_id: &str, why: &str) {
        let n = self.inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::error!(
            dropped_total = n,
            request_id = %request_id,
            path = %self.inner.path.display(),
            why,
            "audit record DROPPED: the audit writer is not keeping up (slow or full disk?)"
        );
    }

    /// Asks the writer to reopen the file (after logrotate moved it). Never lost: the
    /// flag is looked at before every append even when the wake-up cannot be queued;
    /// while it is set, records go through the writer thread.
    pub fn reopen(&self) {
        self.inner.reopen.store(true, Ordering::SeqCst);
        let _ = self.tx.try_send(Msg::Wake);
    }

    /// Waits (at most `wait`) until everything queued so far is written, then logs the
    /// counters. For shutdown.
    pub fn close(&self, wait: Duration) {
        let (tx, rx) = sync_channel(1);
        let flushed = send_within(&self.tx, Msg::Flush(tx), wait) && rx.recv_timeout(wait).is_ok();
        let (written, dropped) = (self.written(), self.dropped());
        let path = self.inner.path.display();
        if dropped > 0 || !flushed {
            tracing::error!(written, dropped, flushed, path = %path, "audit log closed; records were LOST");
        } else {
            tracing::info!(written, dropped, path = %path, "audit log closed");
        }
    }

    /// Records dropped since start (queue full, or the write failed). For metrics.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Records written since start. For metrics.
    pub fn written(&self) -> u64 {
        self.inner.written.load(Ordering::Relaxed)
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.inner.path
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
fn open_file(path: &Path) -> io::Result<Target> {
    if is_stdout(path) {
        use std::os::fd::AsFd;
        let fd = io::stdout().as_fd().try_clone_to_owned().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot write the audit log to standard output: {e}"),
            )
        })?;
        let file = File::from(fd);
        // A pipe (a container's log) is not regular: only the writer thread writes it.
        let regular = file.metadata().is_ok_and(|m| m.file_type().is_file());
        return Ok(Target { file, regular });
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
    let meta = file.metadata().map_err(named)?;
    let (len, regular) = (meta.len(), meta.file_type().is_file());
    if regular && len > 0 {
        let mut last = [0u8];
        file.seek(SeekFrom::Start(len - 1)).map_err(named)?;
        file.read_exact(&mut last).map_err(named)?;
        if last[0] != b'\n' {
            tracing::warn!(path = %path.display(), "the audit log's last line is incomplete (a crash?); starting a new line");
            file.write_all(b"\n").map_err(named)?;
        }
    }
    Ok(Target { file, regular })
}

fn writer(rx: Receiver<Msg>, i: &Inner) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut acks = Vec::new();
    let mut flushes = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        // Batch whatever is already queued into one append of whole lines.
        while let Some(msg) = next {
            match msg {
                Msg::Line(line, ack) => {
                    i.queued_bytes
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
        let mut target = i.lock();
        // Under the lock: no request appends to the old file once the flag is cleared.
        let reopen = i.reopen.swap(false, Ordering::SeqCst);
        if reopen && is_stdout(&i.path) {
            tracing::info!("the audit log is standard output: nothing to reopen");
        } else if reopen {
            // Lines queued before the signal go to the new file too: they are not yet
            // written, and the new file is the one operators will read from now on.
            match open_file(&i.path) {
                Ok(t) => {
                    *target = t;
                    tracing::info!(path = %i.path.display(), "audit log reopened");
                }
                Err(e) => {
                    let dir = i.path.parent().unwrap_or(Path::new("."));
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
            let start = Instant::now();
            let res = target.file.write_all(&buf);
            drop(target);
            i.timed(start.elapsed(), lines, true);
            i.count(res, lines);
            buf.clear();
        } else {
            drop(target);
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
#[path = "audit_log_tests.rs"]
mod tests;
