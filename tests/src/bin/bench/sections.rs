//! The sections of a run, each over every path in turn (so drifting machine load
//! touches all paths alike): small requests, streams, a large body, memory.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use bridge_tests::double::{Double, Script};

use crate::load::{self, Mode};
use crate::procs;
use crate::report::{pct_us, BigCell, ReqCell, Results, StreamCell};
use crate::Plan;

/// One way to reach the double.
pub struct Path {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// The relay's processes, for CPU time.
    pub pids: Vec<u32>,
    /// The relay forks a child per connection (socat).
    pub forks: bool,
}

impl Path {
    fn cpu(&self) -> f64 {
        self.pids.iter().map(|&q| procs::cpu_secs(q)).sum()
    }
}

pub struct Bench<'a> {
    pub double: &'a Double,
    pub rt: &'a tokio::runtime::Runtime,
    pub plan: &'a Plan,
    pub paths: Vec<Path>,
    /// The relaying guest (`bridge`) and the handing-over one (`bridge-handoff`).
    pub guest: u32,
    pub handoff_guest: Option<u32>,
    pub host: u32,
    pub res: &'a mut Results,
}

/// A reply of `chunks` stamped chunks, one every `pace` (zero: at once).
fn stamped(chunks: usize, pace: Duration) -> Script {
    Script {
        text: Some("x ".repeat(chunks).trim_end().to_owned()),
        pace,
        stamp: true,
        ..Script::default()
    }
}

/// How long a process is left alone before an "idle" memory reading.
const IDLE_SETTLE: Duration = Duration::from_millis(2500);

impl Bench<'_> {
    /// Every path answers, and the bridge path really decides and rewrites.
    pub fn sanity(&mut self) -> anyhow::Result<()> {
        for p in &self.paths {
            let r = self.rt.block_on(load::requests(
                p.addr,
                Mode::KeepAlive,
                1,
                Duration::ZERO,
                Duration::from_millis(20),
            ));
            if r.total == 0 || r.errors > 0 {
                bail!("the {} path does not answer: {:?}", p.name, r.first_error);
            }
            let last = self
                .double
                .requests()
                .pop()
                .context("the double saw no request")?;
            let sent = last.json()["options"]["num_ctx"].as_u64();
            if (p.name.starts_with("bridge") || p.name.ends_with("+host")) != (sent == Some(8192)) {
                bail!(
                    "the {} path sent num_ctx {sent:?}: not the expected path",
                    p.name
                );
            }
            self.double.clear();
        }
        eprintln!("bench: all paths answer; bridge-host rewrites num_ctx");
        Ok(())
    }

    pub fn requests(&mut self) {
        for mode in [Mode::KeepAlive, Mode::NewConn] {
            for conc in [1, 8, 64] {
                for p in &self.paths {
                    let cpu0 = p.cpu();
                    let mut r = self.rt.block_on(load::requests(
                        p.addr,
                        mode,
                        conc,
                        self.plan.warm,
                        self.plan.measure,
                    ));
                    if p.forks {
                        // Reaped children's CPU time lands in their parent's cutime/cstime.
                        for &q in &p.pids {
                            if !procs::wait_children_gone(q) {
                                eprintln!(
                                    "bench: {q} still has children; its CPU time is incomplete"
                                );
                            }
                        }
                    }
                    let cpu1 = p.cpu();
                    self.double.clear();
                    let (p50, p99) = pct_us(&mut r.latency_ns);
                    let cell = ReqCell {
                        mode: mode.name(),
                        concurrency: conc,
                        path: p.name,
                        p50_us: p50,
                        p99_us: p99,
                        req_per_s: r.latency_ns.len() as f64 / r.window.as_secs_f64(),
                        measured: r.latency_ns.len(),
                        total: r.total,
                        errors: r.errors,
                        cpu_ms_per_1k: (!p.pids.is_empty() && r.total > 0)
                            .then(|| (cpu1 - cpu0) * 1e6 / r.total as f64),
                    };
                    eprintln!(
                        "bench: {:10} c={:<3} {:11}: p50 {:7.0} µs p99 {:7.0} µs {:8.0} req/s cpu/1k {:5.0} ms errors {}{}",
                        cell.mode,
                        conc,
                        p.name,
                        p50,
                        p99,
                        cell.req_per_s,
                        cell.cpu_ms_per_1k.unwrap_or(0.0),
                        r.errors,
                        r.first_error.map(|e| format!(" (first: {e})")).unwrap_or_default()
                    );
                    self.res.requests.push(cell);
                }
            }
        }
    }

    pub fn streams(&mut self) {
        let pl = self.plan;
        // The first and the last differ only in the tools offered: plain text through
        // the tool-call salvage (the bridge path) against the same text without it.
        let scenarios = [
            (
                format!("1 stream, {} chunks every 1 ms", pl.chunks),
                1usize,
                Duration::from_millis(1),
                pl.single_reps,
                false,
            ),
            (
                format!(
                    "{} streams, {} chunks every {} ms",
                    pl.many,
                    pl.chunks,
                    pl.many_pace.as_millis()
                ),
                pl.many,
                pl.many_pace,
                1,
                false,
            ),
            (
                format!("{} streams, {} chunks at once", pl.many, pl.chunks),
                pl.many,
                Duration::ZERO,
                1,
                false,
            ),
            (
                format!("1 stream, {} chunks every 1 ms, tools offered", pl.chunks),
                1usize,
                Duration::from_millis(1),
                pl.single_reps,
                true,
            ),
        ];
        for (name, n, pace, reps, tools) in &scenarios {
            self.double.set_script(stamped(pl.chunks, *pace));
            for p in &self.paths {
                let mut all = load::Streams::default();
                let mut wall = Duration::ZERO;
                for _ in 0..*reps {
                    let s = self.rt.block_on(load::streams(p.addr, *n, *tools));
                    all.stats.latency_ns.extend(s.stats.latency_ns);
                    all.stats.coalesced_reads += s.stats.coalesced_reads;
                    all.stats.held_reads += s.stats.held_reads;
                    all.stats.reads_with_lines += s.stats.reads_with_lines;
                    all.errors += s.errors;
                    all.first_error = all.first_error.or(s.first_error);
                    wall += s.wall;
                }
                self.double.clear();
                let chunks = all.stats.latency_ns.len() as u64;
                let (p50, p99) = pct_us(&mut all.stats.latency_ns);
                let cell = StreamCell {
                    scenario: name.clone(),
                    streams: *n,
                    chunks_per_stream: pl.chunks,
                    pace_ms: pace.as_secs_f64() * 1000.0,
                    path: p.name,
                    p50_us: p50,
                    p99_us: p99,
                    chunks_per_s: chunks as f64 / wall.as_secs_f64(),
                    chunks,
                    coalesced_reads: all.stats.coalesced_reads,
                    held_reads: all.stats.held_reads,
                    reads_with_chunks: all.stats.reads_with_lines,
                    errors: all.errors,
                };
                eprintln!(
                    "bench: {name} {:11}: p50 {p50:7.0} µs p99 {p99:7.0} µs {:8.0} chunks/s coalesced {}/{} errors {}{}",
                    p.name,
                    cell.chunks_per_s,
                    cell.coalesced_reads,
                    cell.reads_with_chunks,
                    all.errors,
                    all.first_error.map(|e| format!(" (first: {e})")).unwrap_or_default()
                );
                self.res.streams.push(cell);
            }
        }
    }

    /// A large body through the rewrite path.
    pub fn big(&mut self) -> anyhow::Result<()> {
        self.double.set_script(Script::default());
        let body = load::big_body(self.plan.big_bytes);
        for p in &self.paths {
            let mut lat = self
                .rt
                .block_on(load::big(p.addr, &body, self.plan.big_reps))
                .map_err(|e| anyhow::anyhow!("large body on the {} path: {e}", p.name))?;
            self.double.clear();
            let (p50, _) = pct_us(&mut lat);
            let cell = BigCell {
                path: p.name,
                body_bytes: body.len(),
                p50_ms: p50 / 1000.0,
                min_ms: lat[0] as f64 / 1e6,
                reps: lat.len(),
            };
            eprintln!(
                "bench: {} byte body {:11}: p50 {:.1} ms min {:.1} ms",
                body.len(),
                p.name,
                cell.p50_ms,
                cell.min_ms
            );
            self.res.big.push(cell);
        }
        // Idle: bridge-host trims its heap within a second of going idle
        // (server/trim.rs); give it that second and a margin.
        std::thread::sleep(IDLE_SETTLE);
        let m = &mut self.res.mem;
        m.guest_hwm_kib = procs::status_kib(self.guest, "VmHWM");
        m.host_hwm_kib = procs::status_kib(self.host, "VmHWM");
        m.guest_after_big_kib = procs::status_kib(self.guest, "VmRSS");
        m.host_after_big_kib = procs::status_kib(self.host, "VmRSS");
        if let (Some(pid), Some(g)) = (self.handoff_guest, m.handoff_guest.as_mut()) {
            g.hwm_kib = procs::status_kib(pid, "VmHWM");
            g.after_big_kib = procs::status_kib(pid, "VmRSS");
        }
        Ok(())
    }

    /// Memory idle after the run, then with many streams held open (bridge and socat).
    pub fn mem(&mut self) {
        std::thread::sleep(IDLE_SETTLE);
        let m = &mut self.res.mem;
        m.guest_idle_end_kib = procs::status_kib(self.guest, "VmRSS");
        m.host_idle_end_kib = procs::status_kib(self.host, "VmRSS");
        if let (Some(pid), Some(g)) = (self.handoff_guest, m.handoff_guest.as_mut()) {
            g.idle_end_kib = procs::status_kib(pid, "VmRSS");
        }
        m.held_streams = self.plan.held;
        self.double
            .set_script(stamped(1000, Duration::from_millis(20)));
        // socat as tuned: the same processes, without waiting out SYN retransmits.
        for p in self
            .paths
            .iter()
            .filter(|p| matches!(p.name, "bridge" | "bridge-handoff" | "socat-tuned"))
        {
            // Each path's streams start from an idle bridge-host (its heap trimmed after
            // the previous path's), so one reading does not carry the other's.
            std::thread::sleep(IDLE_SETTLE);
            let held = {
                let _g = self.rt.enter();
                load::hold_streams(p.addr, self.plan.held)
            };
            let open = self.rt.block_on(wait_requests(self.double, self.plan.held));
            for _ in 0..5 {
                if p.name == "bridge" {
                    m.guest_streams_kib = m
                        .guest_streams_kib
                        .max(procs::status_kib(self.guest, "VmRSS"));
                    m.host_streams_kib = m
                        .host_streams_kib
                        .max(procs::status_kib(self.host, "VmRSS"));
                } else if p.name == "bridge-handoff" {
                    if let (Some(pid), Some(g)) = (self.handoff_guest, m.handoff_guest.as_mut()) {
                        g.streams_kib = g.streams_kib.max(procs::status_kib(pid, "VmRSS"));
                    }
                    m.host_streams_handoff_kib = m
                        .host_streams_handoff_kib
                        .max(procs::status_kib(self.host, "VmRSS"));
                } else {
                    let mut pids = p.pids.clone();
                    for &q in &p.pids {
                        pids.extend(procs::children(q));
                    }
                    m.socat_streams_procs = m.socat_streams_procs.max(pids.len());
                    let pss: u64 = pids.iter().map(|&q| procs::pss_kib(q)).sum();
                    m.socat_streams_pss_kib = m.socat_streams_pss_kib.max(pss);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let mut ended = Vec::new();
            for h in held {
                if h.is_finished() {
                    ended.push(self.rt.block_on(h).unwrap_or_default());
                } else {
                    h.abort();
                }
            }
            if open < self.plan.held || !ended.is_empty() {
                eprintln!(
                    "bench: {}: {open} of {} streams reached the double; {} ended early (first: {:?})",
                    p.name,
                    self.plan.held,
                    ended.len(),
                    ended.first()
                );
            }
            if p.name == "bridge" {
                m.bridge_open = open;
            } else if p.name == "bridge-handoff" {
                m.handoff_open = open;
            } else {
                m.socat_open = open;
            }
            self.double.clear();
        }
    }
}

/// Waits (at most 60 s) until the double has received `n` requests (so `n` streams are
/// open); returns how many it received.
async fn wait_requests(double: &Double, n: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let seen = double.requests().len();
        if seen >= n || tokio::time::Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
