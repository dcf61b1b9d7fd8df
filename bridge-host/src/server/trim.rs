//! Gives memory back after a busy spell. glibc returns only the top of its heap to the
//! kernel by itself; the buffers of connections and streams that came and went are
//! scattered through it. Once per [`TRIM_EVERY`], if requests arrived since the last
//! trim and none is in flight now, the heap is trimmed (`malloc_trim`, in a blocking
//! thread): a few hundred microseconds, only after activity, never while serving.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::proxy::Shared;

/// How often the trimmer looks.
pub const TRIM_EVERY: Duration = Duration::from_secs(1);

/// The trimmer, from start to `stop`.
pub async fn keep(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut seen = shared.requests_seen();
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopped = tokio::select! {
            _ = tick.tick() => false,
            r = stop.wait_for(|s| *s) => { drop(r); true }
        };
        if stopped {
            break;
        }
        let now = shared.requests_seen();
        if now != seen && shared.metrics.in_flight_total() == 0 {
            seen = now;
            let _ = tokio::task::spawn_blocking(crate::os::sys::malloc_trim).await;
        }
    }
}
