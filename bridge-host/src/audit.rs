//! The audit writer: its own thread appending whole JSON lines to the audit file,
//! fed through a bounded queue so a slow disk never stalls a response for long.
//! A record that cannot be queued is counted and logged, never dropped silently.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use protocol::audit::AuditRecord;
use tokio::sync::oneshot;

/// Records queued at most before new ones are dropped (and counted).
pub const QUEUE: usize = 65_536;

enum Msg {
    Line(Vec<u8>, Option<oneshot::Sender<()>>),
    Reopen,
}

/// A handle to the audit writer; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    path: Arc<PathBuf>,
}

impl AuditLog {
    /// Opens (creating) the audit file and starts the writer thread.
    pub fn open(path: &Path) -> io::Result<AuditLog> {
        let file = open_file(path)?;
        let (tx, rx) = sync_channel(QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        let path = Arc::new(path.to_owned());
        let (w, p) = (written.clone(), path.clone());
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer(rx, file, &p, &w))?;
        Ok(AuditLog {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            written,
            path,
        })
    }

    /// Queues a record. With `ack`, the returned receiver fires once the line is written.
    pub fn submit(&self, rec: &AuditRecord, ack: bool) -> Option<oneshot::Receiver<()>> {
        let mut line = match serde_json::to_vec(rec) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise audit record");
                return None;
            }
        };
        line.push(b'\n');
        let (atx, arx) = if ack {
            let (t, r) = oneshot::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        match self.tx.try_send(Msg::Line(line, atx)) {
            Ok(()) => arx,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(
                    dropped_total = n,
                    request_id = %rec.request_id,
                    path = %self.path.display(),
                    "audit record DROPPED: the audit writer is not keeping up (slow or full disk?)"
                );
                None
            }
        }
    }

    /// Asks the writer to reopen the file (after logrotate moved it).
    pub fn reopen(&self) {
        let _ = self.tx.try_send(Msg::Reopen);
    }

    /// Records dropped since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records written since start.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

fn open_file(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
        }
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open audit log {}: {e}", path.display()),
            )
        })
}

fn writer(rx: Receiver<Msg>, mut file: File, path: &Path, written: &AtomicU64) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut acks = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut reopen = false;
        let mut next = Some(first);
        // Batch whatever is already queued into one append of whole lines.
        while let Some(msg) = next {
            match msg {
                Msg::Line(line, ack) => {
                    buf.extend_from_slice(&line);
                    acks.extend(ack);
                }
                Msg::Reopen => reopen = true,
            }
            next = if buf.len() < 1 << 20 {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !buf.is_empty() {
            let lines = buf.iter().filter(|&&b| b == b'\n').count() as u64;
            match file.write_all(&buf) {
                Ok(()) => {
                    written.fetch_add(lines, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!(error = %e, path = %path.display(), lost = lines, "audit write failed")
                }
            }
            buf.clear();
        }
        for a in acks.drain(..) {
            let _ = a.send(());
        }
        if reopen {
            match open_file(path) {
                Ok(f) => {
                    file = f;
                    tracing::info!(path = %path.display(), "audit log reopened");
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit log reopen failed; still writing to the old file")
                }
            }
        }
    }
}
