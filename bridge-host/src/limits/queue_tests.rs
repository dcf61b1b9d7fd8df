use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Waker;

use super::*;

/// A queue on a manual clock (milliseconds), and the hand that moves it.
fn queue(max: u32) -> (Arc<FairQueue>, Arc<AtomicU64>) {
    let ms = Arc::new(AtomicU64::new(0));
    let c = ms.clone();
    let q = FairQueue::with_clock(
        max,
        Box::new(move || c.load(Ordering::SeqCst) as f64 / 1000.0),
    );
    (q, ms)
}

fn now(e: Entry) -> Slot {
    match e {
        Entry::Now(s) => s,
        Entry::Wait(_) => panic!("expected a slot at once"),
    }
}

fn wait(e: Entry) -> Waiting {
    match e {
        Entry::Wait(w) => w,
        Entry::Now(_) => panic!("expected to wait"),
    }
}

/// The slot, if the waiter has one.
fn ready(w: &mut Waiting) -> Option<Slot> {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(w).poll(&mut cx) {
        Poll::Ready(s) => Some(s),
        Poll::Pending => None,
    }
}

#[test]
fn free_slots_are_taken_at_once_up_to_max_parallel() {
    let (q, _) = queue(2);
    let a = now(q.enter("a", 1));
    let b = now(q.enter("b", 1));
    let mut c = wait(q.enter("a", 1));
    assert!(ready(&mut c).is_none());
    assert_eq!(
        q.view(),
        QueueView {
            max_parallel: 2,
            running: 2,
            waiting: 1
        }
    );
    drop(b);
    assert!(ready(&mut c).is_some());
    drop(a);
}

#[test]
fn a_late_sandbox_goes_before_a_busy_ones_backlog() {
    let (q, clock) = queue(1);
    let first = now(q.enter("a", 1));
    let mut a: Vec<Waiting> = (0..5).map(|_| wait(q.enter("a", 1))).collect();
    clock.fetch_add(500, Ordering::SeqCst);
    let mut b = wait(q.enter("b", 1));
    clock.fetch_add(500, Ordering::SeqCst);
    drop(first);
    // B has had no service; A has had one second of it.
    let got = ready(&mut b).expect("b is next");
    assert!(a.iter_mut().all(|w| ready(w).is_none()));
    drop(got);
    let _held = ready(&mut a[0]).expect("then a, in arrival order");
    assert!(a[1..].iter_mut().all(|w| ready(w).is_none()));
}

#[test]
fn weights_split_a_saturated_upstream() {
    let (q, clock) = queue(1);
    let mut slot = now(q.enter("a", 2));
    let mut a: VecDeque<Waiting> = (0..40).map(|_| wait(q.enter("a", 2))).collect();
    let mut b: VecDeque<Waiting> = (0..40).map(|_| wait(q.enter("b", 1))).collect();
    let (mut to_a, mut to_b) = (0, 0);
    for _ in 0..30 {
        clock.fetch_add(1000, Ordering::SeqCst);
        drop(slot);
        if let Some(s) = ready(a.front_mut().unwrap()) {
            a.pop_front();
            to_a += 1;
            slot = s;
        } else {
            slot = ready(b.front_mut().unwrap()).expect("someone got the slot");
            b.pop_front();
            to_b += 1;
        }
    }
    // Equal request lengths: two of A's for each of B's, give or take the first round.
    assert!((19..=21).contains(&to_a), "a got {to_a}, b got {to_b}");
    assert_eq!(to_a + to_b, 30);
}

#[test]
fn slot_time_counts_not_requests() {
    // A's requests take 10 s, B's 1 s: with equal weights B gets about ten for each of A's.
    let (q, clock) = queue(1);
    let mut slot = now(q.enter("a", 1));
    let mut holder = "a";
    let mut a: VecDeque<Waiting> = (0..20).map(|_| wait(q.enter("a", 1))).collect();
    let mut b: VecDeque<Waiting> = (0..60).map(|_| wait(q.enter("b", 1))).collect();
    let (mut to_a, mut to_b) = (0, 0);
    for _ in 0..44 {
        clock.fetch_add(if holder == "a" { 10_000 } else { 1_000 }, Ordering::SeqCst);
        drop(slot);
        if let Some(s) = ready(a.front_mut().unwrap()) {
            a.pop_front();
            (slot, holder) = (s, "a");
            to_a += 1;
        } else {
            slot = ready(b.front_mut().unwrap()).expect("someone got the slot");
            b.pop_front();
            holder = "b";
            to_b += 1;
        }
    }
    assert!((3..=5).contains(&to_a), "a got {to_a}, b got {to_b}");
}

#[test]
fn idling_earns_no_credit() {
    let (q, clock) = queue(1);
    // A alone for 100 s.
    for _ in 0..100 {
        let s = now(q.enter("a", 1));
        clock.fetch_add(1000, Ordering::SeqCst);
        drop(s);
    }
    let mut slot = now(q.enter("a", 1));
    let mut a: VecDeque<Waiting> = (0..10).map(|_| wait(q.enter("a", 1))).collect();
    let mut b: VecDeque<Waiting> = (0..10).map(|_| wait(q.enter("b", 1))).collect();
    let mut order = String::new();
    for _ in 0..10 {
        clock.fetch_add(1000, Ordering::SeqCst);
        drop(slot);
        if let Some(s) = ready(a.front_mut().unwrap()) {
            a.pop_front();
            slot = s;
            order.push('a');
        } else {
            slot = ready(b.front_mut().unwrap()).unwrap();
            b.pop_front();
            order.push('b');
        }
    }
    // B came in at A's level: they alternate instead of B taking 100 s in a row.
    assert_eq!(order.matches('a').count(), 5, "{order}");
}

#[test]
fn a_waiter_that_leaves_holds_nothing() {
    let (q, _) = queue(1);
    let a = now(q.enter("a", 1));
    let b = wait(q.enter("b", 1));
    assert_eq!(q.flow_view("b").waiting, 1);
    drop(b);
    assert_eq!(q.flow_view("b").waiting, 0);
    drop(a);
    assert_eq!(q.view().running, 0);
    // The next request gets a slot at once.
    drop(now(q.enter("b", 1)));
}

#[test]
fn a_slot_sent_to_a_waiter_that_left_goes_to_the_next() {
    let (q, _) = queue(1);
    let a = now(q.enter("a", 1));
    let b1 = wait(q.enter("b", 1));
    let mut b2 = wait(q.enter("b", 1));
    drop(a);
    // b1 was given the slot but never took it.
    drop(b1);
    let _held = ready(&mut b2).expect("b2 got the slot b1 left");
    assert_eq!(q.view().running, 1);
}

#[test]
fn a_sandbox_sees_only_its_own_requests() {
    let (q, clock) = queue(1);
    let _a = now(q.enter("a", 3));
    let _w = wait(q.enter("a", 3));
    clock.fetch_add(10, Ordering::SeqCst);
    let v = q.flow_view("a");
    assert_eq!((v.running, v.waiting, v.weight), (1, 1, 3));
    assert_eq!(q.flow_view("b"), FlowView::default());
}

#[test]
fn raising_max_parallel_serves_waiters_at_once() {
    let (q, _) = queue(1);
    let _a = now(q.enter("a", 1));
    let mut w = wait(q.enter("b", 1));
    q.set_max(2);
    assert!(ready(&mut w).is_some());
}
