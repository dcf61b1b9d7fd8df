//! The client-side clocks of a connection: `request_header_timeout` (a new connection's
//! first request head, or a later request head from its first byte, must arrive
//! complete within it: the slowloris defence) and `keepalive_timeout` (the idle time
//! allowed between the end of one answer and the first byte of the next request).
//! hyper's own header timer also runs while a keep-alive connection is idle (hyper
//! 1.x starts it when the connection goes idle), so it cannot tell the two apart: it
//! is switched off and this watchdog keeps both.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::proxy::relay::{BoxError, RespBody};

/// Why the watchdog ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Bytes of a request head arrived, but not the whole head in time.
    Head,
    /// Nothing arrived: a new connection that sent nothing, or an idle keep-alive one.
    Idle,
}

#[derive(Debug)]
struct Phase {
    /// A request head was parsed and its answer is not finished.
    busy: bool,
    /// Accept time, or the end of the last answer.
    since: Instant,
    /// First byte read since `since` while not busy.
    head_from: Option<Instant>,
    /// No request was parsed yet.
    first: bool,
}

/// What a connection is doing, as the watchdog needs to know it.
#[derive(Debug)]
pub struct Clock(Mutex<Phase>);

impl Clock {
    /// A clock for a connection accepted now.
    pub fn new() -> Arc<Clock> {
        Arc::new(Clock(Mutex::new(Phase {
            busy: false,
            since: Instant::now(),
            head_from: None,
            first: true,
        })))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Phase) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Bytes arrived from the client.
    pub fn on_read(&self) {
        self.with(|p| {
            if !p.busy && p.head_from.is_none() {
                p.head_from = Some(Instant::now());
            }
        });
    }

    /// A request head was parsed.
    pub fn on_request(&self) {
        self.with(|p| {
            p.busy = true;
            p.first = false;
            p.head_from = None;
        });
    }

    /// The answer was handed to the connection in full (its body ended or was dropped).
    pub fn on_answered(&self) {
        self.with(|p| {
            p.busy = false;
            p.since = Instant::now();
            p.head_from = None;
        });
    }

    /// The next deadline and what it means, or `None` while a request is being served
    /// (or, with keep-alive off, after it).
    fn deadline(&self, header: Duration, keepalive: Duration) -> Option<(Instant, Expiry)> {
        self.with(|p| {
            if p.busy {
                return None;
            }
            let kind = if p.head_from.is_some() {
                Expiry::Head
            } else {
                Expiry::Idle
            };
            match (p.first, p.head_from) {
                (true, _) => Some((p.since + header, kind)),
                (false, Some(t)) => Some((t + header, kind)),
                // Keep-alive off: hyper closes after the answer by itself (once it is
                // written, however slowly the client reads it).
                (false, None) if keepalive.is_zero() => None,
                (false, None) => Some((p.since + keepalive, kind)),
            }
        })
    }
}

/// Resolves when the connection has overstayed one of its timeouts.
pub async fn expired(clock: Arc<Clock>, header: Duration, keepalive: Duration) -> Expiry {
    // Look again at least this often: deadlines move (a request ends, a head starts),
    // and count from the recorded event, so each is kept exactly while the watchdog
    // wakes at most once per the shorter timeout.
    let recheck = if keepalive.is_zero() {
        header
    } else {
        header.min(keepalive)
    };
    loop {
        match clock.deadline(header, keepalive) {
            None => tokio::time::sleep(recheck).await,
            Some((at, kind)) => {
                if at <= Instant::now() {
                    // The deadline may have moved while we slept: only a passed one counts.
                    if clock.deadline(header, keepalive) == Some((at, kind)) {
                        return kind;
                    }
                    continue;
                }
                tokio::time::sleep_until(at.min(Instant::now() + recheck)).await;
            }
        }
    }
}

/// A response body that tells the clock when the answer is complete.
pub struct Tracked {
    inner: RespBody,
    clock: Arc<Clock>,
}

impl Tracked {
    pub fn new(inner: RespBody, clock: Arc<Clock>) -> Tracked {
        Tracked { inner, clock }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.clock.on_answered();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(30);
    const KEEPALIVE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_that_sends_nothing_expires_idle_at_the_header_timeout() {
        let c = Clock::new();
        let t0 = Instant::now();
        assert_eq!(expired(c, HEADER, KEEPALIVE).await, Expiry::Idle);
        assert_eq!(t0.elapsed(), HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_first_head_expires_as_a_request() {
        let c = Clock::new();
        c.on_read();
        let t0 = Instant::now();
        assert_eq!(expired(c, HEADER, KEEPALIVE).await, Expiry::Head);
        assert_eq!(t0.elapsed(), HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_deadline_earlier_than_the_first_head_deadline_is_kept() {
        let long_header = Duration::from_secs(600);
        let c = Clock::new();
        let watchdog = tokio::spawn(expired(c.clone(), long_header, KEEPALIVE));
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.on_read();
        c.on_request();
        c.on_answered();
        let t0 = Instant::now();
        assert_eq!(watchdog.await.unwrap(), Expiry::Idle);
        assert_eq!(t0.elapsed(), KEEPALIVE);
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_idle_then_a_slow_second_head() {
        let c = Clock::new();
        c.on_read();
        c.on_request();
        // A long answer: no deadline while busy.
        tokio::time::sleep(Duration::from_secs(500)).await;
        c.on_answered();
        let t0 = Instant::now();
        assert_eq!(expired(c.clone(), HEADER, KEEPALIVE).await, Expiry::Idle);
        assert_eq!(
            t0.elapsed(),
            KEEPALIVE,
            "idle counts from the end of the answer"
        );

        let c = Clock::new();
        c.on_request();
        c.on_answered();
        tokio::time::sleep(Duration::from_secs(50)).await;
        c.on_read(); // the next head starts: now the header timeout counts
        let t0 = Instant::now();
        assert_eq!(expired(c, HEADER, KEEPALIVE).await, Expiry::Head);
        assert_eq!(t0.elapsed(), HEADER);
    }
}
