//! The per-sandbox request limiters: `max_concurrent` slots with the optional bounded
//! wait `queue_timeout`, the `requests_per_minute` token bucket, the fixed bucket of
//! `/_bridge/status` calls and the `max_body_buffer` budget ([`budget`]). Every sandbox has
//! its own, so one sandbox at its limits never takes from another. A reload keeps a
//! limiter whose setting did not change (requests in flight still count against it) and
//! starts a changed one fresh.

pub mod budget;
pub mod queue;
pub mod tokens;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::config::Sandbox;
use protocol::error::{BridgeError, Reason};
use protocol::limits::{retry_after_secs, TokenBucket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::limits::budget::BodyBudget;
use crate::net::hangup::Hangup;

/// `max_concurrent` slots and the number of requests waiting for one.
pub struct Slots {
    sem: Arc<Semaphore>,
    max: u32,
    queued: AtomicUsize,
}

/// A token bucket (`requests_per_minute`, status calls) on a monotonic clock that starts
/// with it.
pub struct Rate {
    bucket: Mutex<TokenBucket>,
    base: Instant,
    per_minute: u32,
}

/// `/_bridge/status` calls a sandbox may make at once, and per minute after that: their
/// own bucket, so `bridge-guest doctor` and `bridge-host status` never take from
/// `requests_per_minute`, and a flood of them is refused (README, "Limits").
pub const STATUS_BURST: u32 = 10;
pub const STATUS_PER_MINUTE: u32 = 60;

/// A sandbox's limiters (none when the sandbox sets no such limit).
#[derive(Clone)]
pub struct Limiters {
    pub slots: Option<Arc<Slots>>,
    pub rate: Option<Arc<Rate>>,
    /// The bucket of `/_bridge/status` calls (always there; kept across every reload).
    pub status: Arc<Rate>,
    /// The request-body bytes held at once (`max_body_buffer`, always set).
    pub bodies: Arc<BodyBudget>,
    /// Connections open on the listener (real connections: kept across every reload).
    pub connections: Arc<AtomicUsize>,
}

impl Limiters {
    /// Fresh limiters for a sandbox.
    pub fn new(sb: &Sandbox) -> Limiters {
        let slots = sb.max_concurrent.map(|n| {
            Arc::new(Slots {
                sem: Arc::new(Semaphore::new(n as usize)),
                max: n,
                queued: AtomicUsize::new(0),
            })
        });
        let rate = sb.limits.requests_per_minute.map(|n| {
            Arc::new(Rate {
                bucket: Mutex::new(TokenBucket::per_minute(n, Duration::ZERO)),
                base: Instant::now(),
                per_minute: n,
            })
        });
        let status = Arc::new(Rate {
            bucket: Mutex::new(TokenBucket::with_burst(
                STATUS_BURST,
                STATUS_PER_MINUTE,
                Duration::ZERO,
            )),
            base: Instant::now(),
            per_minute: STATUS_PER_MINUTE,
        });
        Limiters {
            slots,
            rate,
            status,
            bodies: BodyBudget::new(sb.limits.max_body_buffer),
            connections: Arc::default(),
        }
    }

    /// The limiters after a reload to `next`: unchanged settings keep their state.
    pub fn successor(&self, next: &Sandbox) -> Limiters {
        let mut fresh = Limiters::new(next);
        fresh.connections = self.connections.clone();
        fresh.status = self.status.clone();
        if self.slots.as_ref().map(|s| s.max) == next.max_concurrent {
            fresh.slots = self.slots.clone();
        }
        if self.rate.as_ref().map(|r| r.per_minute) == next.limits.requests_per_minute {
            fresh.rate = self.rate.clone();
        }
        if self.bodies.max() == next.limits.max_body_buffer {
            fresh.bodies = self.bodies.clone();
        }
        fresh
    }

    /// Requests waiting for a slot right now.
    pub fn queued(&self) -> usize {
        self.slots
            .as_ref()
            .map_or(0, |s| s.queued.load(Ordering::Relaxed))
    }

    /// Connections open on the listener.
    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Takes a token from the rate limit, or refuses with an honest `Retry-After`.
    pub fn check_rate(&self, sb: &Sandbox) -> Result<(), BridgeError> {
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        rate.take().map_err(|wait| {
            let secs = retry_after_secs(wait);
            BridgeError::new(Reason::RateLimited,
                format!(
                    "sandbox \"{}\" is over its rate limit of {} requests per minute (requests_per_minute); retry in {secs} s",
                    sb.name, rate.per_minute
                ),
            )
            .with_retry_after(secs)
        })
    }

    /// Takes a token from the bucket of status calls, or refuses with `Retry-After`.
    pub fn check_status_rate(&self, sb: &Sandbox) -> Result<(), BridgeError> {
        self.status.take().map_err(|wait| {
            let secs = retry_after_secs(wait);
            BridgeError::new(Reason::RateLimited,
                format!(
                    "sandbox \"{}\" is over the rate of status calls ({STATUS_BURST} at once, then {} per minute; requests_per_minute is not used by them); retry in {secs} s",
                    sb.name, self.status.per_minute
                ),
            )
            .with_retry_after(secs)
        })
    }

    /// A `max_concurrent` slot: at once, or after waiting at most `queue_timeout`. The
    /// wait ends early when the client closes its connection (seen by `hangup`) or the
    /// request is dropped.
    pub async fn acquire(
        &self,
        sb: &Sandbox,
        hangup: Option<&Hangup>,
    ) -> Result<Option<OwnedSemaphorePermit>, BridgeError> {
        let Some(slots) = &self.slots else {
            return Ok(None);
        };
        if let Ok(p) = slots.sem.clone().try_acquire_owned() {
            return Ok(Some(p));
        }
        let busy = |waited: Option<Duration>| {
            let tail = match waited {
                Some(w) => format!(" and no slot freed within {w:?} (queue_timeout)"),
                None => String::new(),
            };
            BridgeError::new(Reason::RateLimited,
                format!(
                    "sandbox \"{}\" already has {} requests in flight (max_concurrent){tail}; retry shortly",
                    sb.name, slots.max
                ),
            )
            .with_retry_after(1)
        };
        let Some(wait) = sb.limits.queue_timeout else {
            return Err(busy(None));
        };
        slots.queued.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&slots.queued);
        let gone = async {
            match hangup {
                Some(h) => h.gone().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            got = tokio::time::timeout(wait, slots.sem.clone().acquire_owned()) => match got {
                Ok(Ok(p)) => Ok(Some(p)),
                _ => Err(busy(Some(wait))),
            },
            () = gone => Err(BridgeError::new(Reason::ClientClosed,
                format!("the client closed its connection while waiting for a slot of sandbox \"{}\" (queue_timeout)", sb.name),
            )),
        }
    }
}

impl Rate {
    /// Takes a token, or says how long until one is there.
    fn take(&self) -> Result<(), Duration> {
        let now = self.base.elapsed();
        self.bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(now)
    }
}

/// Counts a request in the queue until it leaves it, however it leaves.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::config::{Config, DefaultsEnv};

    fn sandbox(keys: &str) -> Sandbox {
        let text = format!("[[sandbox]]\nname = \"s\"\nlisten = \"unix:/s.sock\"\n{keys}\n");
        Config::parse(&text, &DefaultsEnv::default())
            .unwrap()
            .sandboxes
            .remove(0)
    }

    #[test]
    fn a_reload_keeps_unchanged_limiters_and_restarts_changed_ones() {
        let one = sandbox("max_concurrent = 2\nrequests_per_minute = 1");
        let l = Limiters::new(&one);
        let mut body = l.bodies.share();
        body.cover(1 << 20).unwrap();
        l.check_rate(&one).unwrap();
        let e = l.check_rate(&one).unwrap_err();
        assert_eq!((e.status(), e.reason), (429, Reason::RateLimited));
        assert!((1..=60).contains(&e.retry_after.unwrap()), "{e:?}");
        l.connections.fetch_add(3, Ordering::Relaxed);

        // Unchanged: the same slots, the same (empty) bucket; connections always carry.
        let same = l.successor(&sandbox(
            "max_concurrent = 2\nrequests_per_minute = 1\nqueue_timeout = \"1s\"",
        ));
        assert!(Arc::ptr_eq(
            same.slots.as_ref().unwrap(),
            l.slots.as_ref().unwrap()
        ));
        assert!(same.check_rate(&one).is_err());
        assert_eq!(same.open_connections(), 3);
        assert_eq!(same.bodies.held(), 1 << 20, "bodies in flight still count");

        // Changed: fresh slots and a full bucket.
        let two = sandbox("max_concurrent = 3\nrequests_per_minute = 2");
        let changed = l.successor(&two);
        assert!(!Arc::ptr_eq(
            changed.slots.as_ref().unwrap(),
            l.slots.as_ref().unwrap()
        ));
        changed.check_rate(&two).unwrap();
        assert_eq!(changed.open_connections(), 3);
        let smaller = l.successor(&sandbox("max_body_buffer = \"64MiB\""));
        assert_eq!((smaller.bodies.max(), smaller.bodies.held()), (64 << 20, 0));
        drop(body);
        assert_eq!(same.bodies.held(), 0);

        // Removed: no limiter at all.
        let none = l.successor(&sandbox(""));
        assert!(none.slots.is_none() && none.rate.is_none());
        assert!(
            Arc::ptr_eq(&none.status, &l.status),
            "the status bucket always carries"
        );
    }

    #[test]
    fn status_calls_have_their_own_bucket() {
        let sb = sandbox("requests_per_minute = 1");
        let l = Limiters::new(&sb);
        l.check_rate(&sb).unwrap();
        assert!(l.check_rate(&sb).is_err());
        for _ in 0..STATUS_BURST {
            l.check_status_rate(&sb).unwrap();
        }
        let e = l.check_status_rate(&sb).unwrap_err();
        assert_eq!((e.status(), e.reason), (429, Reason::RateLimited));
        assert_eq!(e.retry_after, Some(1));
        assert!(e.message.contains("status calls"), "{}", e.message);
    }
}
