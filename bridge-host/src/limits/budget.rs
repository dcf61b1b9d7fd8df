//! `max_body_buffer`: the request-body bytes all of a sandbox's requests may hold in memory
//! at once. A semaphore counts KiB (rounded up); a request takes its share before the
//! bytes arrive (all of a declared `Content-Length` at once, a chunked body step by step)
//! and gives it back when its `Held` is dropped. Taking never waits: an exhausted budget
//! is a 429 at once, so no request can block another's release.

use std::sync::Arc;

use protocol::error::{BridgeError, Reason};
use protocol::units::ByteSize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes per permit.
const UNIT: u64 = 1024;

/// A sandbox's body budget.
pub struct BodyBudget {
    sem: Arc<Semaphore>,
    /// The configured `max_body_buffer`, in bytes.
    bytes: u64,
    /// Permits in all (KiB, rounded up).
    units: u32,
}

/// The budget had no room for a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{held} bytes of request bodies are held (max_body_buffer = {max} bytes)")]
pub struct Exhausted {
    /// Bytes held by every request of the sandbox when the body was refused.
    pub held: u64,
    /// The configured `max_body_buffer`.
    pub max: u64,
}

impl Exhausted {
    /// The answer: 429 `rate_limited`, `Retry-After: 1` (freed shares come back soon).
    pub fn to_error(self, sandbox: &str) -> BridgeError {
        BridgeError::new(Reason::RateLimited,
            format!(
                "sandbox \"{sandbox}\" is already holding {} of request bodies (max_body_buffer = {}); retry shortly",
                ByteSize(self.held),
                ByteSize(self.max)
            ),
        )
        .with_retry_after(1)
    }
}

/// Permits in `bytes`, rounded up (and at most what a semaphore call can take).
fn units(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

impl BodyBudget {
    /// A budget of `bytes` (`max_body_buffer`).
    pub fn new(bytes: u64) -> Arc<BodyBudget> {
        let units = units(bytes).min(u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
        Arc::new(BodyBudget {
            sem: Arc::new(Semaphore::new(units as usize)),
            bytes,
            units,
        })
    }

    /// The configured `max_body_buffer`.
    pub fn max(&self) -> u64 {
        self.bytes
    }

    /// Bytes held right now (in whole KiB per request).
    pub fn held(&self) -> u64 {
        let free = self.sem.available_permits() as u64;
        (u64::from(self.units).saturating_sub(free)) * UNIT
    }

    /// An empty share, to be grown as the body arrives.
    pub fn share(self: &Arc<Self>) -> Held {
        Held {
            budget: Some(self.clone()),
            permit: None,
            units: 0,
        }
    }
}

/// One request's share of its sandbox's budget; given back when dropped.
#[derive(Default)]
pub struct Held {
    budget: Option<Arc<BodyBudget>>,
    permit: Option<OwnedSemaphorePermit>,
    units: u32,
}

impl Held {
    /// A share that counts nothing (tests).
    #[cfg(test)]
    pub fn unbounded() -> Held {
        Held::default()
    }

    /// Bytes this share covers (in whole KiB).
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        u64::from(self.units) * UNIT
    }

    /// Grows the share to cover `total` bytes (never shrinks it); refuses at once if the
    /// budget has no room.
    pub fn cover(&mut self, total: u64) -> Result<(), Exhausted> {
        let Some(b) = &self.budget else {
            return Ok(());
        };
        let want = units(total);
        if want <= self.units {
            return Ok(());
        }
        let more = want - self.units;
        let Ok(p) = b.sem.clone().try_acquire_many_owned(more) else {
            return Err(Exhausted {
                held: b.held(),
                max: b.bytes,
            });
        };
        match &mut self.permit {
            Some(mine) => mine.merge(p),
            None => self.permit = Some(p),
        }
        self.units = want;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_taken_given_back_and_refused_when_exhausted() {
        let b = BodyBudget::new(10 << 10);
        assert_eq!((b.max(), b.held()), (10 << 10, 0));
        let mut one = b.share();
        one.cover(1).unwrap();
        assert_eq!(
            (one.bytes(), b.held()),
            (1 << 10, 1 << 10),
            "rounded up to 1 KiB"
        );
        one.cover(6 << 10).unwrap();
        one.cover(2 << 10).unwrap(); // never shrinks
        assert_eq!(b.held(), 6 << 10);

        let mut two = b.share();
        let e = two.cover(5 << 10).unwrap_err();
        assert_eq!(
            e,
            Exhausted {
                held: 6 << 10,
                max: 10 << 10
            }
        );
        assert_eq!(two.bytes(), 0, "a refusal takes nothing");
        two.cover(4 << 10).unwrap();
        assert_eq!(b.held(), 10 << 10);
        assert!(b.share().cover(1).is_err());
        b.share().cover(0).unwrap(); // an empty body costs nothing

        drop(one);
        assert_eq!(b.held(), 4 << 10);
        let mut three = b.share();
        three.cover(6 << 10).unwrap();
        drop((two, three));
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn one_share_is_at_most_the_whole_budget() {
        let b = BodyBudget::new(4 << 10);
        let mut h = b.share();
        assert!(h.cover(u64::MAX).is_err());
        assert!(h.cover(5 << 10).is_err());
        h.cover(4 << 10).unwrap();
        assert_eq!(b.held(), 4 << 10);
        Held::unbounded().cover(u64::MAX).unwrap();
    }
}
