//! Capabilities are per thread: this makes sure every thread of the daemon ends up
//! without any, not only the one that drops them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use caps::CapSet;

use super::PrivError;

/// Threads started from now on clear their own capabilities (see [`confine_thread`]).
static CONFINE_NEW_THREADS: AtomicBool = AtomicBool::new(false);

/// Longest wait for every thread to clear its capabilities.
const CONFINE_WAIT: Duration = Duration::from_secs(10);

/// From now on, [`confine_thread`] clears the calling thread's capabilities.
pub(super) fn confine_new_threads() {
    CONFINE_NEW_THREADS.store(true, Ordering::SeqCst);
}

/// Called by every thread the daemon starts (tokio's workers and blocking threads, the
/// audit writer) before it runs anything else: once the daemon runs unprivileged with
/// capabilities it is about to shed, the new thread clears its own sets.
pub fn confine_thread() {
    if !CONFINE_NEW_THREADS.load(Ordering::SeqCst) {
        return;
    }
    for set in [CapSet::Effective, CapSet::Permitted] {
        if let Err(e) = caps::clear(None, set) {
            tracing::warn!(error = %e, set = ?set, "a thread cannot clear its capabilities");
        }
    }
}

/// Waits until no thread of the process holds a capability (threads started earlier clear
/// theirs in [`confine_thread`] as soon as they first run), as `/proc/self/task` shows.
/// Fails after [`CONFINE_WAIT`]; without a readable `/proc` only the main thread is checked.
pub(super) fn every_thread_confined(bounding: bool) -> Result<(), PrivError> {
    let mut keys = vec!["CapInh", "CapPrm", "CapEff", "CapAmb"];
    if bounding {
        keys.push("CapBnd");
    }
    let deadline = Instant::now() + CONFINE_WAIT;
    loop {
        let holding = match threads_holding(&keys) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read /proc/self/task: only the main thread's capabilities were checked");
                return Ok(());
            }
        };
        if holding.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(PrivError::Verify(format!(
                "threads still hold capabilities: {}",
                holding.join(", ")
            )));
        }
        // Start-up only, and only while a thread has not run yet.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `TID KEY=HEX` for every thread with a non-empty set among `keys`.
fn threads_holding(keys: &[&str]) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")? {
        let task = task?;
        // A thread that ended meanwhile has nothing to hold.
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if keys.contains(&key) && value.bytes().any(|b| b != b'0') {
                out.push(format!(
                    "{} {key}={value}",
                    task.file_name().to_string_lossy()
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_every_threads_sets() {
        let other = std::thread::spawn(std::thread::park);
        // Every thread of the test process holds a bounding set (full by default).
        let bnd = super::threads_holding(&["CapBnd"]).unwrap();
        assert!(bnd.len() >= 2, "{bnd:?}");
        assert!(bnd.iter().all(|l| l.contains(" CapBnd=")), "{bnd:?}");
        assert!(super::threads_holding(&["NoSuchSet"]).unwrap().is_empty());
        other.thread().unpark();
        other.join().unwrap();
    }
}
