//! Stamped chat streams for benchmarks: each content chunk carries, as its text, the
//! moment it was handed to the HTTP server (nanoseconds since a process-wide epoch), so
//! a client in the same process measures per-chunk latency as its receive time minus
//! that stamp. Chunks go out at a fixed pace (or all at once); the bytes keep Ollama's
//! chunk shape (`message.content` is just a number) and the final `done:true` chunk is
//! the double's usual one.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::native::{Plan, CREATED_AT};
use super::server::{self, DBody};
use super::State;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The process-wide epoch of the stamps (fixed on first use).
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// Reads the stamp back from a stamped chunk line (`"content":"<ns>"`).
pub fn parse(line: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"content\":\"";
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// Sends `chunks` stamped content chunks of a chat reply for `model`, one every `pace`
/// (all at once when zero; a late tick delays the rest rather than bursting), then
/// `last` (the final chunk).
pub async fn emit(
    state: Arc<State>,
    model: String,
    chunks: usize,
    pace: Duration,
    last: Bytes,
    tx: mpsc::Sender<Bytes>,
) {
    let model = serde_json::to_string(&model).expect("json string");
    let mut tick = (!pace.is_zero()).then(|| {
        let mut t = tokio::time::interval(pace);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });
    for _ in 0..chunks {
        if let Some(t) = &mut tick {
            t.tick().await;
        }
        let line = format!(
            "{{\"model\":{model},\"created_at\":\"{CREATED_AT}\",\"message\":{{\"role\":\"assistant\",\"content\":\"{}\"}},\"done\":false}}\n",
            now_ns()
        );
        state.emitted.send_modify(|n| *n += 1);
        if tx.send(Bytes::from(line)).await.is_err() {
            return;
        }
    }
    if let Some(t) = &mut tick {
        t.tick().await;
    }
    let _ = tx.send(last).await;
}

/// The streamed answer to a chat request whose script asks for stamps: one stamped
/// chunk per planned piece, then the plan's final chunk `last`.
pub fn stream(state: &Arc<State>, plan: &Plan, last: Bytes) -> Response<DBody> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(emit(
        state.clone(),
        plan.model.clone(),
        plan.pieces.len(),
        plan.script.pace,
        last,
        tx,
    ));
    server::stream("application/x-ndjson", rx)
}
