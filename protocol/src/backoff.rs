//! The pause after a failed `accept` (out of file descriptors, a transient kernel error):
//! 5ms, doubling up to 1s, back to 5ms after the next success. Pure: the caller sleeps.
//! Used by bridge-host's accept loop and bridge-guest's relay so neither dies of, nor
//! spins on, an accept error.

use std::time::Duration;

/// Backoff state of one accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// The first delay after a success.
    pub const INITIAL: Duration = Duration::from_millis(5);
    /// The longest delay.
    pub const MAX: Duration = Duration::from_secs(1);

    /// A fresh backoff: the next failure waits [`Backoff::INITIAL`].
    pub const fn new() -> Self {
        Backoff {
            next: Self::INITIAL,
        }
    }

    /// Records a failure; returns how long to wait before trying again.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = self.next.saturating_mul(2).min(Self::MAX);
        wait
    }

    /// Records a success: the next failure starts again at [`Backoff::INITIAL`].
    pub fn succeeded(&mut self) {
        self.next = Self::INITIAL;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_from_5ms_up_to_1s() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..10).map(|_| b.failed()).collect();
        assert_eq!(
            waits,
            [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000].map(ms)
        );
    }

    #[test]
    fn stays_at_the_maximum() {
        let mut b = Backoff::new();
        for _ in 0..100 {
            assert!(b.failed() <= Backoff::MAX);
        }
        assert_eq!(b.failed(), Backoff::MAX);
    }

    #[test]
    fn a_success_resets_it() {
        let mut b = Backoff::new();
        b.failed();
        b.failed();
        b.failed();
        b.succeeded();
        assert_eq!(b.failed(), ms(5));
        assert_eq!(b.failed(), ms(10));
    }

    #[test]
    fn default_is_new() {
        assert_eq!(Backoff::default(), Backoff::new());
    }
}
