//! Token budgets per sandbox (`tokens_per_hour`, `tokens_per_day`): the pure arithmetic
//! of their sliding windows. Usage is kept as one bucket per wall-clock minute over the
//! last day (at most 1440 buckets per sandbox, whatever the traffic); tokens used in a
//! minute count against the hour window for the 60 minutes after that minute and against
//! the day window for 1440. A request is admitted while every budget has tokens left
//! (check before, charge after: the last admitted request may overshoot). Time is passed
//! in as unix seconds (the windows outlive a restart), so everything here is tested
//! without a clock.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// A sandbox's budgets (`None`: no budget for that window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenBudget {
    pub per_hour: Option<u64>,
    pub per_day: Option<u64>,
}

impl TokenBudget {
    /// The budget of one window.
    pub fn of(self, w: Window) -> Option<u64> {
        match w {
            Window::Hour => self.per_hour,
            Window::Day => self.per_day,
        }
    }

    /// Is any budget set?
    pub fn is_set(self) -> bool {
        self.per_hour.is_some() || self.per_day.is_some()
    }
}

/// A budget's sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Window {
    Hour,
    Day,
}

/// Minutes kept: the longest window.
pub const KEPT_MINUTES: u64 = 1440;

impl Window {
    pub const ALL: [Window; 2] = [Window::Hour, Window::Day];

    /// The window's length in minutes.
    pub fn minutes(self) -> u64 {
        match self {
            Window::Hour => 60,
            Window::Day => KEPT_MINUTES,
        }
    }

    /// `hour` or `day` (status fields, metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "hour",
            Window::Day => "day",
        }
    }

    /// The configuration key of its budget.
    pub fn key(self) -> &'static str {
        match self {
            Window::Hour => "tokens_per_hour",
            Window::Day => "tokens_per_day",
        }
    }
}

/// Tokens used per minute over the last day: `(unix minute, tokens)`, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Usage {
    buckets: VecDeque<(u64, u64)>,
}

/// A spent budget: which, how far, and when enough of it refills to be under it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    pub window: Window,
    pub budget: u64,
    pub used: u64,
    /// Seconds until enough of the window has expired to be under the budget (≥ 1).
    pub retry_after: u64,
    /// That moment, in unix seconds.
    pub refills_at: u64,
}

/// One window of a sandbox's usage, as shown in status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowUse {
    pub window: Window,
    pub budget: Option<u64>,
    pub used: u64,
    /// `budget - used` (never below 0), with a budget.
    pub left: Option<u64>,
    /// With a spent budget: seconds until it is under the budget again.
    pub refills_in: Option<u64>,
}

impl Usage {
    /// Adds `tokens` used at `now` (unix seconds). A clock that stepped back adds to
    /// the newest bucket.
    pub fn charge(&mut self, now: u64, tokens: u64) {
        let minute = now / 60;
        self.prune(minute);
        if tokens == 0 {
            return;
        }
        match self.buckets.back_mut() {
            Some((m, n)) if *m >= minute => *n = n.saturating_add(tokens),
            _ => self.buckets.push_back((minute, tokens)),
        }
    }

    /// Drops the buckets older than the longest window.
    fn prune(&mut self, minute: u64) {
        while self
            .buckets
            .front()
            .is_some_and(|&(m, _)| m + KEPT_MINUTES <= minute)
        {
            self.buckets.pop_front();
        }
    }

    /// Buckets still inside window `w` at `now`, oldest first.
    fn inside(&self, w: Window, now: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let minute = now / 60;
        self.buckets
            .iter()
            .copied()
            .filter(move |&(m, _)| m + w.minutes() > minute)
    }

    /// Tokens used inside window `w` at `now`.
    pub fn used(&self, w: Window, now: u64) -> u64 {
        self.inside(w, now).fold(0, |a, (_, n)| a.saturating_add(n))
    }

    /// Seconds from `now` until the usage of window `w` is under `budget` (0: it is).
    pub fn refill_in(&self, w: Window, budget: u64, now: u64) -> u64 {
        let mut used = self.used(w, now);
        for (m, n) in self.inside(w, now) {
            if used < budget {
                break;
            }
            used -= n;
            if used < budget {
                // Bucket `m` leaves the window at the start of minute `m + len`.
                return ((m + w.minutes()) * 60).saturating_sub(now).max(1);
            }
        }
        0
    }

    /// Whether a request may start at `now`: every budget has tokens left. When more
    /// than one is spent, the one that refills last is named.
    pub fn check(&self, b: TokenBudget, now: u64) -> Result<(), Exhausted> {
        let mut worst: Option<Exhausted> = None;
        for w in Window::ALL {
            let Some(budget) = b.of(w) else { continue };
            let used = self.used(w, now);
            if used < budget {
                continue;
            }
            let wait = self.refill_in(w, budget, now).max(1);
            let later = match worst {
                Some(x) => wait > x.retry_after,
                None => true,
            };
            if later {
                worst = Some(Exhausted {
                    window: w,
                    budget,
                    used,
                    retry_after: wait,
                    refills_at: now + wait,
                });
            }
        }
        worst.map_or(Ok(()), Err)
    }

    /// Both windows at `now`, with what is left of their budgets.
    pub fn report(&self, b: TokenBudget, now: u64) -> [WindowUse; 2] {
        Window::ALL.map(|w| {
            let used = self.used(w, now);
            let budget = b.of(w);
            WindowUse {
                window: w,
                budget,
                used,
                left: budget.map(|b| b.saturating_sub(used)),
                refills_in: budget
                    .filter(|&b| used >= b)
                    .map(|b| self.refill_in(w, b, now).max(1)),
            }
        })
    }

    /// No bucket left inside the longest window at `now`.
    pub fn is_empty_at(&self, now: u64) -> bool {
        self.used(Window::Day, now) == 0
    }
}

impl Exhausted {
    /// The refusal's message for `sandbox`.
    pub fn message(&self, sandbox: &str) -> String {
        format!(
            "sandbox \"{sandbox}\" has used its token budget of {} tokens per {} ({}): {} tokens used in the last {}; it refills at {} (in {} s)",
            self.budget,
            self.window.as_str(),
            self.window.key(),
            self.used,
            self.window.as_str(),
            crate::audit::rfc3339_millis(self.refills_at * 1000),
            self.retry_after,
        )
    }
}

/// Does a request on `route` use a model's tokens (chat, generate, embed and their
/// OpenAI and other translated forms)? Only these are checked against and charged to a
/// budget; listings, version and status never are.
pub fn metered(route: &crate::route::Route) -> bool {
    // The requests that run a model: the same that wait in the fair queue.
    route.runs_model()
}

/// Does an answer on `route` have completion tokens? (Embeddings have none.)
pub fn completes(route: &crate::route::Route) -> bool {
    use crate::route::Route::*;
    !matches!(route, Embed | Embeddings | OaiEmbeddings)
}

/// What one answer costs: the counts Ollama reported, or an estimate for the part it
/// did not report (the answer was cut off before its last chunk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    pub tokens: u64,
    /// Some of `tokens` is an estimate.
    pub estimated: bool,
}

/// The charge of an answer: `prompt` and `completion` as Ollama counted them; a missing
/// prompt count is estimated as a quarter of the request body's bytes (rounded up), a
/// missing completion count as one token per chunk (line) of the answer seen — unless
/// the answer has no completion (`completes` false: embeddings).
pub fn charge(
    prompt: Option<u64>,
    completion: Option<u64>,
    bytes_in: u64,
    chunks: u64,
    completes: bool,
) -> Charge {
    let p = prompt.unwrap_or(bytes_in.div_ceil(4));
    let completion = if completes { completion } else { Some(0) };
    let c = completion.unwrap_or(chunks);
    Charge {
        tokens: p.saturating_add(c),
        estimated: prompt.is_none() || completion.is_none(),
    }
}

/// The budget state file: each sandbox's usage by name (bridge-host writes it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Format version: 1.
    pub version: u32,
    pub sandboxes: BTreeMap<String, Usage>,
}

/// The state file's format version.
pub const STATE_VERSION: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000; // a minute's start (a multiple of 60)

    #[test]
    fn windows_slide_by_the_minute() {
        let mut u = Usage::default();
        u.charge(T0 + 5, 100);
        u.charge(T0 + 59, 50);
        u.charge(T0 + 60, 10);
        assert_eq!(u.used(Window::Hour, T0 + 60), 160);
        // Minute T0 leaves the hour window at T0 + 60 min; T0+1 min a minute later.
        assert_eq!(u.used(Window::Hour, T0 + 3599), 160);
        assert_eq!(u.used(Window::Hour, T0 + 3600), 10);
        assert_eq!(u.used(Window::Hour, T0 + 3660), 0);
        assert_eq!(u.used(Window::Day, T0 + 3660), 160);
        assert_eq!(u.used(Window::Day, T0 + 86_400), 10);
        assert_eq!(u.used(Window::Day, T0 + 86_460), 0);
        // Pruned on the next charge: bounded memory.
        u.charge(T0 + 2 * 86_400, 1);
        assert_eq!(u.buckets.len(), 1);
    }

    #[test]
    fn a_budget_is_spent_at_its_size_and_refills_when_enough_expires() {
        let b = TokenBudget {
            per_hour: Some(100),
            per_day: None,
        };
        let mut u = Usage::default();
        u.charge(T0, 60);
        assert_eq!(u.check(b, T0), Ok(()));
        u.charge(T0 + 600, 30);
        assert_eq!(u.check(b, T0 + 600), Ok(()), "90 < 100: admitted");
        // The last admitted request overshoots.
        u.charge(T0 + 700, 50);
        let e = u.check(b, T0 + 700).unwrap_err();
        assert_eq!((e.window, e.budget, e.used), (Window::Hour, 100, 140));
        // Minute T0 (60 tokens) expires at T0 + 3600: 80 < 100.
        assert_eq!(e.retry_after, 3600 - 700);
        assert_eq!(e.refills_at, T0 + 3600);
        assert!(u.check(b, T0 + 3599).is_err());
        assert_eq!(u.check(b, T0 + 3600), Ok(()));
        let m = e.message("a");
        assert!(m.contains("100 tokens per hour (tokens_per_hour)"), "{m}");
        assert!(m.contains("140 tokens used in the last hour"), "{m}");
        assert!(m.contains("in 2900 s"), "{m}");
    }

    #[test]
    fn several_buckets_may_have_to_expire() {
        let mut u = Usage::default();
        u.charge(T0, 10);
        u.charge(T0 + 60, 10);
        u.charge(T0 + 120, 200);
        // 220 ≥ 50: the first two buckets leave and 200 is still over; only the third.
        assert_eq!(u.refill_in(Window::Hour, 50, T0 + 120), 3600);
        assert_eq!(u.refill_in(Window::Hour, 215, T0 + 120), 3600 - 120);
        assert_eq!(u.refill_in(Window::Hour, 205, T0 + 130), 3600 + 60 - 130);
        assert_eq!(u.refill_in(Window::Hour, 1000, T0 + 120), 0);
    }

    #[test]
    fn the_window_that_refills_last_is_named() {
        let b = TokenBudget {
            per_hour: Some(100),
            per_day: Some(150),
        };
        let mut u = Usage::default();
        u.charge(T0, 100);
        let e = u.check(b, T0).unwrap_err();
        assert_eq!(e.window, Window::Hour);
        u.charge(T0 + 7200, 60);
        // Hour: 60 < 100. Day: 160 ≥ 150, the first bucket leaves after a day.
        let e = u.check(b, T0 + 7200).unwrap_err();
        assert_eq!((e.window, e.used), (Window::Day, 160));
        assert_eq!(e.retry_after, 86_400 - 7200);
        let r = u.report(b, T0 + 7200);
        assert_eq!(
            (r[0].used, r[0].left, r[0].refills_in),
            (60, Some(40), None)
        );
        assert_eq!((r[1].used, r[1].left), (160, Some(0)));
        assert_eq!(r[1].refills_in, Some(86_400 - 7200));
        assert_eq!(u.check(TokenBudget::default(), T0 + 7200), Ok(()));
    }

    #[test]
    fn a_clock_stepping_back_never_loses_tokens() {
        let mut u = Usage::default();
        u.charge(T0 + 600, 10);
        u.charge(T0, 5);
        assert_eq!(u.used(Window::Hour, T0 + 600), 15);
        assert_eq!(u.buckets.len(), 1);
    }

    #[test]
    fn cut_answers_are_charged_an_estimate() {
        assert_eq!(
            charge(Some(26), Some(290), 1000, 9, true),
            Charge {
                tokens: 316,
                estimated: false
            }
        );
        // No counts: a quarter of the body's bytes, one token per chunk.
        assert_eq!(
            charge(None, None, 1001, 7, true),
            Charge {
                tokens: 251 + 7,
                estimated: true
            }
        );
        assert_eq!(charge(Some(10), None, 1001, 7, true).tokens, 17);
        // Embeddings have no completion: the prompt count is the whole cost.
        assert_eq!(
            charge(Some(8), None, 1001, 1, false),
            Charge {
                tokens: 8,
                estimated: false
            }
        );
        assert_eq!(charge(None, None, 40, 1, false).tokens, 10);
    }

    #[test]
    fn the_state_round_trips() {
        let mut u = Usage::default();
        u.charge(T0, 10);
        u.charge(T0 + 60, 20);
        let mut s = State {
            version: STATE_VERSION,
            ..State::default()
        };
        s.sandboxes.insert("a".into(), u);
        let text = serde_json::to_string(&s).unwrap();
        let m = T0 / 60;
        assert_eq!(
            text,
            format!(
                "{{\"version\":1,\"sandboxes\":{{\"a\":[[{m},10],[{},20]]}}}}",
                m + 1
            )
        );
        assert_eq!(serde_json::from_str::<State>(&text).unwrap(), s);
    }
}
