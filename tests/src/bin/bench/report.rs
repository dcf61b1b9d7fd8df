//! Results: percentiles from sorted samples, the markdown tables (with ratios to the
//! direct connection and to the socat pair, and each target met or missed) and the
//! machine-readable JSON.

use serde::Serialize;

/// p50 and p99 in microseconds of samples in nanoseconds (nearest rank).
pub fn pct_us(v: &mut [u64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_unstable();
    let at = |p: f64| {
        let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1] as f64 / 1000.0
    };
    (at(0.50), at(0.99))
}

#[derive(Debug, Serialize)]
pub struct ReqCell {
    pub mode: &'static str,
    pub concurrency: usize,
    pub path: &'static str,
    pub p50_us: f64,
    pub p99_us: f64,
    pub req_per_s: f64,
    pub measured: usize,
    pub total: u64,
    pub errors: u64,
    /// Relay CPU (user+system) per 1,000 requests; none for the direct path.
    pub cpu_ms_per_1k: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct StreamCell {
    pub scenario: String,
    pub streams: usize,
    pub chunks_per_stream: usize,
    pub pace_ms: f64,
    pub path: &'static str,
    pub p50_us: f64,
    pub p99_us: f64,
    pub chunks_per_s: f64,
    pub chunks: u64,
    /// Client reads that completed more than one chunk.
    pub coalesced_reads: u64,
    /// Of those, reads whose chunks were sent ≥ 0.5 ms apart (one was held back).
    pub held_reads: u64,
    pub reads_with_chunks: u64,
    pub errors: u64,
}

#[derive(Debug, Serialize)]
pub struct BigCell {
    pub path: &'static str,
    pub body_bytes: usize,
    pub p50_ms: f64,
    pub min_ms: f64,
    pub reps: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct Mem {
    pub guest_idle_start_kib: u64,
    pub host_idle_start_kib: u64,
    pub guest_idle_end_kib: u64,
    pub host_idle_end_kib: u64,
    pub held_streams: usize,
    pub guest_streams_kib: u64,
    pub host_streams_kib: u64,
    /// After the large-body requests (which come last), and the peaks of the run.
    pub guest_after_big_kib: u64,
    pub host_after_big_kib: u64,
    pub guest_hwm_kib: u64,
    pub host_hwm_kib: u64,
    /// The socat pair with the same streams open: summed PSS of every socat process.
    pub socat_streams_pss_kib: u64,
    pub socat_streams_procs: usize,
    /// Streams that actually reached the double (should be `held_streams`).
    pub bridge_open: usize,
    pub socat_open: usize,
    /// The guest that hands connections over (the `bridge-handoff` path), when it ran;
    /// the `guest_*` fields above are the relaying guest's (`bridge`).
    pub handoff_guest: Option<GuestMem>,
    /// bridge-host with the streams held open through the hand-off path (it then holds
    /// the clients' TCP connections itself).
    pub host_streams_handoff_kib: u64,
    pub handoff_open: usize,
}

/// One guest process's readings (VmRSS, and the peak VmHWM).
#[derive(Debug, Default, Serialize)]
pub struct GuestMem {
    pub idle_start_kib: u64,
    pub idle_end_kib: u64,
    pub streams_kib: u64,
    pub after_big_kib: u64,
    pub hwm_kib: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Machine {
    pub date: String,
    pub command: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub rustc: String,
    pub load_before: String,
    pub load_after: String,
    pub guest_bin: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub machine: Machine,
    pub quick: bool,
    pub requests: Vec<ReqCell>,
    pub streams: Vec<StreamCell>,
    pub big: Vec<BigCell>,
    pub mem: Mem,
    pub fairness: Vec<crate::fairness::Mode>,
    pub gateway: Vec<crate::gateway::Cell>,
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn r(a: f64, b: f64) -> String {
    format!("{:.2}", a / b)
}

fn ok(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

impl Results {
    fn req(&self, mode: &str, c: usize, path: &str) -> Option<&ReqCell> {
        self.requests
            .iter()
            .find(|x| x.mode == mode && x.concurrency == c && x.path == path)
    }

    fn stream(&self, scenario: &str, path: &str) -> Option<&StreamCell> {
        self.streams
            .iter()
            .find(|x| x.scenario == scenario && x.path == path)
    }

    fn big(&self, path: &str) -> Option<&BigCell> {
        self.big.iter().find(|x| x.path == path)
    }

    /// The tables as markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        s += &format!(
            "Run {}: `{}`\n\n{} CPUs ({}), kernel {}, {}; guest binary {}; load average before {} / after {}\n\n",
            m.date, m.command, m.cpus, m.cpu_model, m.kernel, m.rustc, m.guest_bin, m.load_before, m.load_after
        );
        s += "### Small requests (POST /api/chat, `stream:false`, the double answers at once)\n\n";
        s += "Latency from sending the request (connecting, for new-conn) to the whole answer; ratios of p50 latency and of requests/s to the direct connection and to the socat pair; relay CPU time (user + system) per 1,000 requests: bridge-guest + bridge-host, or both socat parents plus every per-connection child they reaped.\n\n";
        s += "| connections | conc. | path | p50 µs | p99 µs | p50 ÷ direct | p50 ÷ socat | req/s | req/s ÷ direct | req/s ÷ socat | CPU ms / 1k req | errors |\n";
        s += "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for mode in ["keep-alive", "new-conn"] {
            for c in [1, 8, 64] {
                let d = self.req(mode, c, "direct");
                let so = self.req(mode, c, "socat");
                for x in self
                    .requests
                    .iter()
                    .filter(|x| x.mode == mode && x.concurrency == c)
                {
                    let ratio = |o: Option<&ReqCell>, f: fn(&ReqCell) -> f64| {
                        o.map_or("—".into(), |o| r(f(x), f(o)))
                    };
                    s += &format!(
                        "| {mode} | {c} | {} | {:.0} | {:.0} | {} | {} | {:.0} | {} | {} | {} | {} |\n",
                        x.path,
                        x.p50_us,
                        x.p99_us,
                        ratio(d, |x| x.p50_us),
                        ratio(so, |x| x.p50_us),
                        x.req_per_s,
                        ratio(d, |x| x.req_per_s),
                        ratio(so, |x| x.req_per_s),
                        x.cpu_ms_per_1k.map_or("—".into(), |v| format!("{v:.0}")),
                        x.errors
                    );
                }
            }
        }
        s += "\n### Streams (stamped chunks; latency = client receive − the double's send)\n\n";
        s += "| scenario | path | per-chunk p50 / p99 µs | added p50 / p99 µs (vs direct) | chunks/s | reads with >1 chunk | of those, chunks sent ≥ 0.5 ms apart | errors |\n";
        s += "|---|---|---:|---:|---:|---:|---:|---:|\n";
        let mut scen: Vec<&str> = self.streams.iter().map(|x| x.scenario.as_str()).collect();
        scen.dedup();
        for sc in &scen {
            let d = self.stream(sc, "direct");
            for x in self.streams.iter().filter(|x| x.scenario == *sc) {
                let added = match d {
                    Some(d) if x.path != "direct" => {
                        format!("{:.0} / {:.0}", x.p50_us - d.p50_us, x.p99_us - d.p99_us)
                    }
                    _ => "—".into(),
                };
                s += &format!(
                    "| {sc} | {} | {:.0} / {:.0} | {added} | {:.0} | {} of {} | {} | {} |\n",
                    x.path,
                    x.p50_us,
                    x.p99_us,
                    x.chunks_per_s,
                    x.coalesced_reads,
                    x.reads_with_chunks,
                    x.held_reads,
                    x.errors
                );
            }
        }
        let one = |tools: bool| {
            self.streams.iter().find(|x| {
                x.path == "bridge"
                    && x.streams == 1
                    && x.scenario.ends_with("tools offered") == tools
            })
        };
        if let (Some(plain), Some(tools)) = (one(false), one(true)) {
            s += &format!(
                "\nTool-call salvage on plain text (bridge, 1 stream, same run): per-chunk p50 / p99 {:.0} / {:.0} µs with tools offered, {:.0} / {:.0} µs without: added p99 {:.0} µs.\n",
                tools.p50_us,
                tools.p99_us,
                plain.p50_us,
                plain.p99_us,
                tools.p99_us - plain.p99_us
            );
        }
        if let Some(d) = self.big("direct") {
            s += &format!(
                "\n### A {:.1} MiB request (base64 image in a chat message, through the rewrite path)\n\n",
                d.body_bytes as f64 / (1 << 20) as f64
            );
            s += "| path | p50 ms | min ms | added p50 vs direct ms |\n|---|---:|---:|---:|\n";
            for x in &self.big {
                s += &format!(
                    "| {} | {:.1} | {:.1} | {:.1} |\n",
                    x.path,
                    x.p50_ms,
                    x.min_ms,
                    x.p50_ms - d.p50_ms
                );
            }
        }
        let mm = &self.mem;
        s += "\n### Memory (VmRSS)\n\n| process | idle at start | idle after requests and streams | with streams open | idle after the large bodies | peak of the run (VmHWM) |\n|---|---:|---:|---:|---:|---:|\n";
        let relay = if mm.handoff_guest.is_some() {
            "bridge-guest (relay)"
        } else {
            "bridge-guest"
        };
        s += &format!(
            "| {relay} | {} | {} | {} | {} | {} |\n",
            mib(mm.guest_idle_start_kib),
            mib(mm.guest_idle_end_kib),
            mib(mm.guest_streams_kib),
            mib(mm.guest_after_big_kib),
            mib(mm.guest_hwm_kib),
        );
        if let Some(g) = &mm.handoff_guest {
            s += &format!(
                "| bridge-guest (hand-off) | {} | {} | {} | {} | {} |\n",
                mib(g.idle_start_kib),
                mib(g.idle_end_kib),
                mib(g.streams_kib),
                mib(g.after_big_kib),
                mib(g.hwm_kib),
            );
        }
        s += &format!(
            "| bridge-host (both guests' connections) | {} | {} | {} | {} | {} |\n",
            mib(mm.host_idle_start_kib),
            mib(mm.host_idle_end_kib),
            mib(mm.host_streams_kib.max(mm.host_streams_handoff_kib)),
            mib(mm.host_after_big_kib),
            mib(mm.host_hwm_kib)
        );
        s += &format!(
            "\nStreams open at the reading: bridge {}, bridge-handoff {}, socat {} (of {}); bridge-host {} with the relay's, {} with the hand-off's. With them the (tuned) socat pair runs {} processes, {} in total (PSS).\n",
            mm.bridge_open,
            mm.handoff_open,
            mm.socat_open,
            mm.held_streams,
            mib(mm.host_streams_kib),
            mib(mm.host_streams_handoff_kib),
            mm.socat_streams_procs,
            mib(mm.socat_streams_pss_kib)
        );
        s += &self.targets();
        s
    }

    /// Issue 20's targets, for each bridge path that ran (the hand-off first: the default
    /// on unix sockets), against both socat pairs.
    fn targets(&self) -> String {
        let mut s = String::from("\n### Targets\n\n| target | measured | |\n|---|---|---|\n");
        let mut row = |t: &str, m: String, met: bool| {
            s += &format!("| {t} | {m} | {} |\n", ok(met));
        };
        let bridges: Vec<&str> = ["bridge-handoff", "bridge"]
            .into_iter()
            .filter(|b| {
                self.requests.iter().any(|x| x.path == *b)
                    || self.streams.iter().any(|x| x.path == *b)
            })
            .collect();
        for b in &bridges {
            for sv in ["socat", "socat-tuned"] {
                if let (Some(d), Some(so), Some(x)) = (
                    self.req("keep-alive", 1, "direct"),
                    self.req("keep-alive", 1, sv),
                    self.req("keep-alive", 1, b),
                ) {
                    row(
                        &format!("keep-alive, conc. 1: {b} p50 ≤ {sv} p50"),
                        format!(
                            "{b} {:.0} µs ({}× direct), {sv} {:.0} µs ({}× direct)",
                            x.p50_us,
                            r(x.p50_us, d.p50_us),
                            so.p50_us,
                            r(so.p50_us, d.p50_us)
                        ),
                        x.p50_us <= so.p50_us,
                    );
                }
                if let (Some(so), Some(x)) = (
                    self.req("keep-alive", 64, sv),
                    self.req("keep-alive", 64, b),
                ) {
                    row(
                        &format!("keep-alive, conc. 64: {b} req/s ≥ 1.5 × {sv}"),
                        format!(
                            "{:.0} vs {:.0} ({}×)",
                            x.req_per_s,
                            so.req_per_s,
                            r(x.req_per_s, so.req_per_s)
                        ),
                        x.req_per_s >= 1.5 * so.req_per_s,
                    );
                }
                for c in [1, 8, 64] {
                    if let (Some(so), Some(x)) =
                        (self.req("new-conn", c, sv), self.req("new-conn", c, b))
                    {
                        row(
                            &format!("new connection per request, conc. {c}: {b} req/s ≥ 5 × {sv}"),
                            format!(
                                "{:.0} vs {:.0} ({}×)",
                                x.req_per_s,
                                so.req_per_s,
                                r(x.req_per_s, so.req_per_s)
                            ),
                            x.req_per_s >= 5.0 * so.req_per_s,
                        );
                    }
                }
            }
        }
        let mut scen: Vec<&str> = self
            .streams
            .iter()
            .filter(|x| x.pace_ms > 0.0)
            .map(|x| x.scenario.as_str())
            .collect();
        scen.dedup();
        for sc in scen {
            for b in &bridges {
                let (Some(d), Some(x)) = (self.stream(sc, "direct"), self.stream(sc, b)) else {
                    continue;
                };
                let added = x.p99_us - d.p99_us;
                row(
                    &format!("streaming ({sc}): {b} added per-chunk p99 < 1 ms"),
                    format!("{added:.0} µs"),
                    added < 1000.0,
                );
                // Against both pairs: the untuned one serves few of many streams at
                // once (its backlog), so its per-chunk latency can undercut direct's.
                for sv in ["socat", "socat-tuned"] {
                    if let Some(so) = self.stream(sc, sv) {
                        row(
                            &format!("streaming ({sc}): {b} per-chunk p50 ≤ {sv}'s + 100 µs"),
                            format!(
                                "{b} {:.0} µs, {sv} {:.0} µs ({:.0} chunks/s), direct {:.0} µs",
                                x.p50_us, so.p50_us, so.chunks_per_s, d.p50_us
                            ),
                            x.p50_us <= so.p50_us + 100.0,
                        );
                    }
                }
                row(
                    &format!("streaming ({sc}): {b}: no chunk coalescing"),
                    format!(
                        "reads with chunks sent ≥ 0.5 ms apart: {b} {}, direct {} (any >1 chunk: {b} {}, direct {})",
                        x.held_reads, d.held_reads, x.coalesced_reads, d.coalesced_reads
                    ),
                    x.held_reads <= d.held_reads + x.reads_with_chunks / 1000,
                );
            }
        }
        for b in &bridges {
            if let (Some(d), Some(x)) = (self.big("direct"), self.big(b)) {
                let added = x.p50_ms - d.p50_ms;
                row(
                    &format!(
                        "{:.0} MiB body, {b}: added < 100 ms",
                        d.body_bytes as f64 / (1 << 20) as f64
                    ),
                    format!("{added:.1} ms"),
                    added < 100.0,
                );
            }
        }
        let mm = &self.mem;
        if let Some(g) = &mm.handoff_guest {
            row(
                "bridge-guest (hand-off) RSS idle ≤ 4 MiB, also after load",
                format!(
                    "{} at start, {} after requests and streams, {} after the large bodies",
                    mib(g.idle_start_kib),
                    mib(g.idle_end_kib),
                    mib(g.after_big_kib)
                ),
                g.idle_start_kib.max(g.idle_end_kib).max(g.after_big_kib) <= 4096,
            );
        }
        row(
            "bridge-guest (relay) RSS idle ≤ 4 MiB, also after load",
            format!(
                "{} at start, {} after requests and streams, {} after the large bodies",
                mib(mm.guest_idle_start_kib),
                mib(mm.guest_idle_end_kib),
                mib(mm.guest_after_big_kib)
            ),
            mm.guest_idle_start_kib
                .max(mm.guest_idle_end_kib)
                .max(mm.guest_after_big_kib)
                <= 4096,
        );
        row(
            "bridge-host idle RSS after the large bodies ≤ 2 × idle at start",
            format!(
                "{} after, {} at start ({}×)",
                mib(mm.host_after_big_kib),
                mib(mm.host_idle_start_kib),
                r(mm.host_after_big_kib as f64, mm.host_idle_start_kib as f64)
            ),
            mm.host_after_big_kib <= 2 * mm.host_idle_start_kib,
        );
        row(
            &format!("bridge-host RSS ≤ 40 MiB at {} streams", mm.held_streams),
            format!(
                "{} (relay), {} (hand-off)",
                mib(mm.host_streams_kib),
                mib(mm.host_streams_handoff_kib)
            ),
            mm.host_streams_kib.max(mm.host_streams_handoff_kib) <= 40 * 1024,
        );
        s
    }
}
