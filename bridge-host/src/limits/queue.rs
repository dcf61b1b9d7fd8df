//! The fair queue in front of an upstream server: at most `[upstream] max_parallel` model
//! requests are in Ollama at once; the rest wait here, and each free slot goes to the
//! waiting sandbox that has had the least service, weighted by its `weight`.
//!
//! Service is counted in **slot-time**: the seconds a sandbox's requests held a slot,
//! divided by its weight (its "virtual time", as Linux's CFS counts `vruntime`). Requests
//! are not equal: a 30-second generation holds Ollama as long as three hundred embeddings,
//! so counting requests would let the long ones take the lion's share. Slots still held
//! count up to now, so a sandbox with requests running is charged for them while they run.
//! A sandbox that starts waiting after being idle starts at the least virtual time of the
//! sandboxes already busy (CFS's `min_vruntime`): idling earns no credit to spend later in
//! a burst. Within a sandbox, arrival order. The queue knows only names and weights; a
//! sandbox is told only about its own requests.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The queue of one upstream server.
pub struct FairQueue {
    state: Mutex<State>,
    /// Seconds on a monotonic clock (a manual one in unit tests).
    clock: Box<dyn Fn() -> f64 + Send + Sync>,
}

struct State {
    max: usize,
    running: usize,
    next_seq: u64,
    /// Counts grants: a flow's last one breaks ties (the one served longest ago first).
    grants: u64,
    flows: HashMap<Arc<str>, Flow>,
}

/// One sandbox's share of the queue.
struct Flow {
    weight: u32,
    /// Slot-seconds of finished requests, divided by the weight.
    done: f64,
    /// Slots held now, and the sum of their start times (seconds since `base`).
    held: u32,
    held_since: f64,
    last_grant: u64,
    waiters: VecDeque<Waiter>,
}

struct Waiter {
    seq: u64,
    arrived: Instant,
    tx: oneshot::Sender<Slot>,
}

impl Flow {
    fn new(weight: u32) -> Flow {
        Flow {
            weight: weight.max(1),
            done: 0.0,
            held: 0,
            held_since: 0.0,
            last_grant: 0,
            waiters: VecDeque::new(),
        }
    }

    /// Service so far, held slots counted up to `now`.
    fn service(&self, now: f64) -> f64 {
        self.done + (f64::from(self.held) * now - self.held_since) / f64::from(self.weight)
    }

    fn busy(&self) -> bool {
        self.held > 0 || !self.waiters.is_empty()
    }
}

/// What a sandbox may know of the queue: its own requests only.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FlowView {
    /// Its requests holding a slot.
    pub running: u32,
    /// Its requests waiting.
    pub waiting: u32,
    /// How long its oldest waiting request has waited.
    pub oldest_wait: Duration,
    pub weight: u32,
}

/// The whole queue, for the operator (`bridge-host status`, metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueView {
    pub max_parallel: u32,
    pub running: u32,
    pub waiting: u32,
}

/// A slot: Ollama may work on one more request. Given back when dropped, and the next
/// waiting request (the least served sandbox's) gets it.
pub struct Slot {
    queue: Arc<FairQueue>,
    flow: Arc<str>,
    start: f64,
    armed: bool,
}

/// A request waiting for a slot: resolves to it. Dropping it leaves the queue at once.
pub struct Waiting {
    queue: Arc<FairQueue>,
    flow: Arc<str>,
    seq: u64,
    rx: oneshot::Receiver<Slot>,
}

/// A slot at once, or a place in the line.
pub enum Entry {
    Now(Slot),
    Wait(Waiting),
}

impl FairQueue {
    pub fn new(max_parallel: u32) -> Arc<FairQueue> {
        let base = Instant::now();
        Self::with_clock(max_parallel, Box::new(move || base.elapsed().as_secs_f64()))
    }

    fn with_clock(max_parallel: u32, clock: Box<dyn Fn() -> f64 + Send + Sync>) -> Arc<FairQueue> {
        Arc::new(FairQueue {
            state: Mutex::new(State {
                max: max_parallel.max(1) as usize,
                running: 0,
                next_seq: 0,
                grants: 0,
                flows: HashMap::new(),
            }),
            clock,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> f64 {
        (self.clock)()
    }

    /// A new `max_parallel` (a reload): more slots go to waiting requests at once; fewer
    /// take effect as held slots are given back.
    pub fn set_max(self: &Arc<Self>, max_parallel: u32) {
        let mut st = self.lock();
        st.max = max_parallel.max(1) as usize;
        self.dispatch(&mut st);
    }

    /// Enters the queue as sandbox `flow` of `weight`.
    pub fn enter(self: &Arc<Self>, flow: &str, weight: u32) -> Entry {
        let mut st = self.lock();
        let now = self.now();
        let floor = st
            .flows
            .iter()
            .filter(|(n, f)| f.busy() && &***n != flow)
            .map(|(_, f)| f.service(now))
            .fold(f64::INFINITY, f64::min);
        let key: Arc<str> = match st.flows.get_key_value(flow) {
            Some((k, _)) => k.clone(),
            None => Arc::from(flow),
        };
        let f = st
            .flows
            .entry(key.clone())
            .or_insert_with(|| Flow::new(weight));
        f.weight = weight.max(1);
        if !f.busy() && floor.is_finite() {
            f.done = f.done.max(floor);
        }
        if st.running < st.max {
            // Nobody waits while a slot is free: `dispatch` keeps it so.
            return Entry::Now(self.grant(&mut st, key, now));
        }
        let (tx, rx) = oneshot::channel();
        let seq = st.next_seq;
        st.next_seq += 1;
        let f = st.flows.get_mut(&key).expect("inserted above");
        f.waiters.push_back(Waiter {
            seq,
            arrived: Instant::now(),
            tx,
        });
        Entry::Wait(Waiting {
            queue: self.clone(),
            flow: key,
            seq,
            rx,
        })
    }

    /// Counts a slot as held by `flow`.
    fn grant(self: &Arc<Self>, st: &mut State, flow: Arc<str>, now: f64) -> Slot {
        st.running += 1;
        st.grants += 1;
        let grants = st.grants;
        let f = st.flows.get_mut(&flow).expect("the flow exists");
        f.last_grant = grants;
        f.held += 1;
        f.held_since += now;
        Slot {
            queue: self.clone(),
            flow,
            start: now,
            armed: true,
        }
    }

    /// Undoes [`Self::grant`] for a slot that was never used.
    fn ungrant(st: &mut State, slot: &mut Slot) {
        slot.armed = false;
        st.running -= 1;
        if let Some(f) = st.flows.get_mut(&slot.flow) {
            f.held -= 1;
            f.held_since -= slot.start;
        }
    }

    /// Gives free slots to the least served sandboxes that wait.
    fn dispatch(self: &Arc<Self>, st: &mut State) {
        while st.running < st.max {
            let now = self.now();
            let next = st
                .flows
                .iter()
                .filter_map(|(n, f)| f.waiters.front().map(|_| (n, f.service(now), f.last_grant)))
                .min_by(|a, b| a.1.total_cmp(&b.1).then(a.2.cmp(&b.2)))
                .map(|(n, _, _)| n.clone());
            let Some(name) = next else { return };
            let w = st
                .flows
                .get_mut(&name)
                .and_then(|f| f.waiters.pop_front())
                .expect("the flow has a waiter");
            let slot = self.grant(st, name, now);
            if let Err(mut slot) = w.tx.send(slot) {
                // The waiter left between its last poll and now: the slot was not used.
                Self::ungrant(st, &mut slot);
            }
        }
    }

    /// What `flow` may know.
    pub fn flow_view(&self, flow: &str) -> FlowView {
        let st = self.lock();
        st.flows
            .get(flow)
            .map_or(FlowView::default(), |f| FlowView {
                running: f.held,
                waiting: f.waiters.len() as u32,
                oldest_wait: f
                    .waiters
                    .front()
                    .map_or(Duration::ZERO, |w| w.arrived.elapsed()),
                weight: f.weight,
            })
    }

    /// The whole queue.
    pub fn view(&self) -> QueueView {
        let st = self.lock();
        QueueView {
            max_parallel: st.max as u32,
            running: st.running as u32,
            waiting: st.flows.values().map(|f| f.waiters.len() as u32).sum(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        let q = self.queue.clone();
        let mut st = q.lock();
        let now = q.now();
        st.running -= 1;
        if let Some(f) = st.flows.get_mut(&self.flow) {
            f.held -= 1;
            f.held_since -= self.start;
            f.done += (now - self.start).max(0.0) / f64::from(f.weight);
        }
        q.dispatch(&mut st);
    }
}

impl Future for Waiting {
    type Output = Slot;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Slot> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(slot)) => Poll::Ready(slot),
            // The sender is only dropped after a send or with the waiter's removal,
            // which only `Waiting`'s own drop does.
            Poll::Ready(Err(_)) => Poll::Pending,
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        // Leave the line; a slot already sent is dropped with `rx` after this (outside
        // the lock) and goes to the next waiter.
        let mut st = self.queue.lock();
        if let Some(f) = st.flows.get_mut(&self.flow) {
            f.waiters.retain(|w| w.seq != self.seq);
        }
    }
}

/// A request's place in the queue: how long it waited, and its slot once it has one.
#[derive(Default)]
pub struct Ticket {
    /// Milliseconds waited, `u64::MAX` until the request got its slot.
    waited_ms: AtomicU64,
    slot: Mutex<Option<Slot>>,
}

impl Ticket {
    pub fn new() -> Ticket {
        Ticket {
            waited_ms: AtomicU64::new(u64::MAX),
            slot: Mutex::new(None),
        }
    }

    /// How long the request waited for its slot; `None` when it never got one.
    pub fn waited_ms(&self) -> Option<u64> {
        Some(self.waited_ms.load(Ordering::Relaxed)).filter(|&w| w != u64::MAX)
    }

    /// Gives the slot back (the exchange's record is written).
    pub fn release(&self) {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(slot);
    }

    /// The request got `slot` after waiting `waited`.
    pub fn hold(&self, slot: Slot, waited: Duration) {
        self.waited_ms
            .store(waited.as_millis() as u64, Ordering::Relaxed);
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(slot);
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
