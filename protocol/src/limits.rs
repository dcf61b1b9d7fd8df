//! Per-sandbox limits beyond `max_concurrent` and `max_body`: the queue for a free slot,
//! the request rate, the request head, connections, the request-body bytes held at once
//! (`max_body_buffer`), and the client-side timeouts. Their
//! defaults, their validation, and the pure token bucket behind `requests_per_minute`
//! (time is passed in, so it is tested without a clock).

use std::time::Duration;

use crate::units::ByteSize;

/// Default `max_body` of a sandbox (also re-exported as `config::DEFAULT_MAX_BODY`).
pub const DEFAULT_MAX_BODY: u64 = 32 << 20;
/// Default `max_headers` (hyper's own default).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Smallest and largest `max_headers`.
pub const MAX_HEADERS_RANGE: (usize, usize) = (8, 1000);
/// Default `max_header_bytes`: the whole request head, request line included.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 64 << 10;
/// Smallest and largest `max_header_bytes` (hyper's read buffer cannot be smaller than 8 KiB;
/// the read buffer of every connection may grow to this size).
pub const MAX_HEADER_BYTES_RANGE: (u64, u64) = (8 << 10, 1 << 20);
/// Default `max_connections` per listener.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
/// Default `keepalive_timeout`.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `request_header_timeout`.
pub const DEFAULT_REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// `max_body_buffer` defaults to this many times `max_body`.
pub const DEFAULT_BODY_BUFFER_FACTOR: u64 = 4;
/// Longest `queue_timeout` and `request_header_timeout` (longer is a hang, not a limit).
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// The checked limits of a sandbox (see README's `[[sandbox]]` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// With `max_concurrent`: wait this long for a free slot before 429 (`None`: no wait).
    pub queue_timeout: Option<Duration>,
    /// Token bucket: this many requests at once, refilled at this many per minute.
    pub requests_per_minute: Option<u32>,
    /// Header fields in one request head; more get 431.
    pub max_headers: usize,
    /// Bytes of one request head, request line included; more get 431.
    pub max_header_bytes: usize,
    /// Open connections on the listener; more get a 503 and are closed.
    pub max_connections: u32,
    /// Request-body bytes all of the sandbox's requests may hold at once; more get 429.
    pub max_body_buffer: u64,
    /// Idle time allowed between two requests on a keep-alive connection (zero: no keep-alive).
    pub keepalive_timeout: Duration,
    /// Time to receive a complete request head (slowloris defence).
    pub request_header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            queue_timeout: None,
            requests_per_minute: None,
            max_headers: DEFAULT_MAX_HEADERS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES as usize,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_body_buffer: DEFAULT_BODY_BUFFER_FACTOR * DEFAULT_MAX_BODY,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            request_header_timeout: DEFAULT_REQUEST_HEADER_TIMEOUT,
        }
    }
}

/// The limit keys as written (all optional).
#[derive(Debug, Default, Clone, Copy)]
pub struct RawLimits {
    pub max_concurrent: Option<u32>,
    pub queue_timeout: Option<Duration>,
    pub requests_per_minute: Option<u32>,
    pub max_headers: Option<usize>,
    pub max_header_bytes: Option<u64>,
    pub max_connections: Option<u32>,
    /// The sandbox's `max_body` (checked elsewhere; `None`: the default).
    pub max_body: Option<u64>,
    pub max_body_buffer: Option<u64>,
    pub keepalive_timeout: Option<Duration>,
    pub request_header_timeout: Option<Duration>,
}

impl RawLimits {
    /// Validates the keys; every problem is one message saying what to write instead.
    pub fn check(self) -> Result<Limits, Vec<String>> {
        let mut errs = Vec::new();
        let d = Limits::default();
        if let Some(q) = self.queue_timeout {
            if q.is_zero() || q > MAX_WAIT {
                errs.push(format!(
                    "queue_timeout must be between 1ms and {MAX_WAIT:?} (leave it out for no wait)"
                ));
            }
        }
        if self.requests_per_minute == Some(0) {
            errs.push(
                "requests_per_minute must be at least 1 (leave it out for no rate limit)".into(),
            );
        }
        let (lo, hi) = MAX_HEADERS_RANGE;
        let max_headers = self.max_headers.unwrap_or(d.max_headers);
        if !(lo..=hi).contains(&max_headers) {
            errs.push(format!("max_headers must be between {lo} and {hi}"));
        }
        let (lo, hi) = MAX_HEADER_BYTES_RANGE;
        let max_header_bytes = self.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES);
        if !(lo..=hi).contains(&max_header_bytes) {
            errs.push(format!(
                "max_header_bytes must be between \"{}KiB\" and \"{}MiB\"",
                lo >> 10,
                hi >> 20
            ));
        }
        if self.max_connections == Some(0) {
            errs.push("max_connections must be at least 1".into());
        }
        let max_body = self.max_body.unwrap_or(DEFAULT_MAX_BODY);
        let max_body_buffer = self
            .max_body_buffer
            .unwrap_or(max_body.saturating_mul(DEFAULT_BODY_BUFFER_FACTOR));
        if max_body_buffer < max_body {
            errs.push(format!(
                "max_body_buffer ({}) must be at least max_body ({}): one body of max_body must fit; raise max_body_buffer or lower max_body (leave max_body_buffer out for {DEFAULT_BODY_BUFFER_FACTOR} × max_body)",
                ByteSize(max_body_buffer),
                ByteSize(max_body)
            ));
        }
        let request_header_timeout = self
            .request_header_timeout
            .unwrap_or(d.request_header_timeout);
        if request_header_timeout.is_zero() || request_header_timeout > MAX_WAIT {
            errs.push(format!(
                "request_header_timeout must be between 1ms and {MAX_WAIT:?}"
            ));
        }
        let keepalive_timeout = self.keepalive_timeout.unwrap_or(d.keepalive_timeout);
        if keepalive_timeout > Duration::from_secs(3600) {
            errs.push("keepalive_timeout must be at most 1h (\"0s\" turns keep-alive off)".into());
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(Limits {
            queue_timeout: self.queue_timeout,
            requests_per_minute: self.requests_per_minute,
            max_headers,
            max_header_bytes: max_header_bytes as usize,
            max_connections: self.max_connections.unwrap_or(d.max_connections),
            max_body_buffer,
            keepalive_timeout,
            request_header_timeout,
        })
    }
}

/// `requests_per_minute = N` as a token bucket: it holds at most N tokens (a burst of N
/// requests), starts full and refills at N per minute; each request takes one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    /// The time of the last refill, as the caller's clock reads it.
    last: Duration,
}

impl TokenBucket {
    /// A full bucket for `n` requests per minute; `now` is the caller's clock.
    pub fn per_minute(n: u32, now: Duration) -> TokenBucket {
        TokenBucket::with_burst(n, n, now)
    }

    /// A full bucket of `burst` tokens, refilled at `n` per minute.
    pub fn with_burst(burst: u32, n: u32, now: Duration) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            capacity: burst,
            per_sec: f64::from(n.max(1)) / 60.0,
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token at `now`, or says how long until one is there.
    pub fn take(&mut self, now: Duration) -> Result<(), Duration> {
        let dt = now.saturating_sub(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + dt * self.per_sec).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
        }
    }
}

/// The `Retry-After` value for a wait: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let s = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    s.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn bucket_bursts_then_refills_at_the_rate() {
        let mut b = TokenBucket::per_minute(3, S(100));
        for _ in 0..3 {
            assert_eq!(b.take(S(100)), Ok(()));
        }
        // Empty: one token every 20 s.
        assert_eq!(b.take(S(100)), Err(S(20)));
        assert_eq!(b.take(S(110)), Err(S(10)));
        assert_eq!(b.take(S(120)), Ok(()));
        assert_eq!(b.take(S(120)), Err(S(20)));
        // A long pause refills to the burst, never beyond.
        for _ in 0..3 {
            assert_eq!(b.take(S(10_000)), Ok(()));
        }
        assert!(b.take(S(10_000)).is_err());
        // A clock that steps back does not mint tokens.
        assert!(b.take(S(5)).is_err());
    }

    #[test]
    fn a_burst_can_differ_from_the_rate() {
        let mut b = TokenBucket::with_burst(2, 60, S(0));
        assert_eq!(b.take(S(0)), Ok(()));
        assert_eq!(b.take(S(0)), Ok(()));
        assert_eq!(b.take(S(0)), Err(S(1)));
        assert_eq!(b.take(S(1)), Ok(()));
        // Refilled to the burst, not to the rate.
        assert_eq!(b.take(S(100)), Ok(()));
        assert_eq!(b.take(S(100)), Ok(()));
        assert!(b.take(S(100)).is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_at_least_one_second() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(S(20)), 20);
        assert_eq!(retry_after_secs(Duration::from_millis(20_001)), 21);
    }

    #[test]
    fn defaults_and_validation() {
        assert_eq!(RawLimits::default().check(), Ok(Limits::default()));
        let ok = RawLimits {
            max_concurrent: Some(2),
            queue_timeout: Some(S(5)),
            requests_per_minute: Some(60),
            max_headers: Some(50),
            max_header_bytes: Some(16 << 10),
            max_connections: Some(10),
            max_body: Some(1 << 20),
            max_body_buffer: None,
            keepalive_timeout: Some(Duration::ZERO),
            request_header_timeout: Some(S(5)),
        }
        .check()
        .unwrap();
        assert_eq!(ok.max_header_bytes, 16 << 10);
        assert_eq!(ok.keepalive_timeout, Duration::ZERO);
        assert_eq!(ok.max_body_buffer, 4 << 20, "4 × max_body by default");
        assert_eq!(Limits::default().max_body_buffer, 128 << 20);
        let equal = RawLimits {
            max_body: Some(1 << 20),
            max_body_buffer: Some(1 << 20),
            ..Default::default()
        };
        assert_eq!(equal.check().unwrap().max_body_buffer, 1 << 20);
        // queue_timeout alone bounds the wait in the upstream's fair queue.
        let alone = RawLimits {
            queue_timeout: Some(S(5)),
            ..Default::default()
        };
        assert_eq!(alone.check().unwrap().queue_timeout, Some(S(5)));
        for (raw, want) in [
            (
                RawLimits {
                    max_concurrent: Some(1),
                    queue_timeout: Some(Duration::ZERO),
                    ..Default::default()
                },
                "queue_timeout must be",
            ),
            (
                RawLimits {
                    requests_per_minute: Some(0),
                    ..Default::default()
                },
                "requests_per_minute must be at least 1",
            ),
            (
                RawLimits {
                    max_headers: Some(2),
                    ..Default::default()
                },
                "max_headers must be between 8 and 1000",
            ),
            (
                RawLimits {
                    max_header_bytes: Some(1024),
                    ..Default::default()
                },
                "max_header_bytes must be between \"8KiB\" and \"1MiB\"",
            ),
            (
                RawLimits {
                    max_body: Some(8 << 20),
                    max_body_buffer: Some(4 << 20),
                    ..Default::default()
                },
                "max_body_buffer (4MiB) must be at least max_body (8MiB)",
            ),
            (
                RawLimits {
                    max_body_buffer: Some(1 << 20),
                    ..Default::default()
                },
                "must be at least max_body (32MiB)",
            ),
            (
                RawLimits {
                    max_connections: Some(0),
                    ..Default::default()
                },
                "max_connections must be at least 1",
            ),
            (
                RawLimits {
                    request_header_timeout: Some(Duration::ZERO),
                    ..Default::default()
                },
                "request_header_timeout must be",
            ),
            (
                RawLimits {
                    keepalive_timeout: Some(S(7200)),
                    ..Default::default()
                },
                "keepalive_timeout must be at most 1h",
            ),
        ] {
            let e = raw.check().unwrap_err();
            assert!(e.iter().any(|m| m.contains(want)), "{want}: {e:?}");
        }
    }
}
