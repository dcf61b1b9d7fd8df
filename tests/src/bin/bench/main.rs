//! Benchmark (issue 9): the bridge (bridge-guest → bridge-host with policy and num_ctx
//! rewrite → Ollama) against a direct connection and against the socat pair, side by
//! side in one run, with the Ollama test double in-process answering at a fixed pace.
//! Prints markdown tables and writes the results as JSON (`--out`).
//!
//! Build and run (release builds only):
//! `cargo build --release --locked -p bridge-host -p bridge-guest -p ollama-bridge-tests --bins`
//! then `target/release/bench --out docs/bench-results.json` (`--quick` for a smoke run).

mod client;
mod load;
mod procs;
mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use bridge_tests::double::{stamp, Double, DoubleConfig, Script};
use clap::Parser;

use load::Mode;
use report::{BigCell, Mem, ReqCell, Results, StreamCell};

#[derive(Parser)]
#[command(about = "Benchmark: direct vs socat pair vs bridge-guest → bridge-host")]
struct Args {
    /// Tiny counts: a smoke run of every workload, in seconds.
    #[arg(long)]
    quick: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Directory with bridge-host and bridge-guest (default: this binary's directory).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The bridge-guest to run (e.g. the static release-small build).
    #[arg(long)]
    guest_bin: Option<PathBuf>,
}

/// Counts and durations of a run.
struct Plan {
    warm: Duration,
    measure: Duration,
    chunks: usize,
    single_reps: usize,
    many: usize,
    many_pace: Duration,
    big_bytes: usize,
    big_reps: usize,
    held: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                warm: Duration::from_millis(30),
                measure: Duration::from_millis(150),
                chunks: 40,
                single_reps: 1,
                many: 8,
                many_pace: Duration::from_millis(2),
                big_bytes: 1 << 20,
                big_reps: 2,
                held: 16,
            }
        } else {
            Plan {
                warm: Duration::from_millis(500),
                measure: Duration::from_millis(2500),
                chunks: 1000,
                single_reps: 3,
                many: 64,
                many_pace: Duration::from_millis(5),
                big_bytes: 20 << 20,
                big_reps: 8,
                held: 256,
            }
        }
    }
}

const PATHS: [&str; 3] = ["direct", "socat", "bridge"];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    procs::install_cleanup();
    stamp::epoch();
    let plan = Plan::new(args.quick);
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => bridge_tests::harness::bin_dir(),
    };
    let host_bin = bin_dir.join("bridge-host");
    let guest_bin = args
        .guest_bin
        .clone()
        .unwrap_or_else(|| bin_dir.join("bridge-guest"));
    for b in [&host_bin, &guest_bin] {
        if !b.exists() {
            bail!(
                "{} is missing: cargo build --release --locked -p bridge-host -p bridge-guest -p ollama-bridge-tests --bins",
                b.display()
            );
        }
    }
    if cfg!(debug_assertions) && !args.quick {
        eprintln!("bench: warning: this is a debug build; benchmarks need --release");
    }

    let mut res = Results {
        quick: args.quick,
        machine: report::Machine {
            command: std::env::args().collect::<Vec<_>>().join(" "),
            guest_bin: guest_bin.display().to_string(),
            load_before: loadavg(),
            ..machine()
        },
        ..Results::default()
    };

    // The double: its own runtime with one worker; the client: another with one worker.
    let double_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("double")
        .enable_all()
        .build()?;
    let double = double_rt.block_on(Double::start(DoubleConfig::default()));
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("client")
        .enable_all()
        .build()?;

    let dir = tempfile::tempdir()?;
    let (host, socket) = procs::start_host(&host_bin, dir.path(), double.addr())?;
    let (guest, guest_addr) = procs::start_guest(&guest_bin, &socket)?;
    let socat = procs::start_socat(dir.path(), double.addr())?;
    let addr_of = |p: &str| -> SocketAddr {
        match p {
            "direct" => double.addr(),
            "socat" => socat.addr,
            _ => guest_addr,
        }
    };
    res.mem.guest_idle_start_kib = procs::status_kib(guest.pid(), "VmRSS");
    res.mem.host_idle_start_kib = procs::status_kib(host.pid(), "VmRSS");

    // Every path answers, and the bridge path really decides and rewrites.
    for p in PATHS {
        let r = client_rt.block_on(load::requests(
            addr_of(p),
            Mode::KeepAlive,
            1,
            Duration::ZERO,
            Duration::from_millis(20),
        ));
        if r.total == 0 || r.errors > 0 {
            bail!("the {p} path does not answer: {:?}", r.first_error);
        }
        let last = double
            .requests()
            .pop()
            .context("the double saw no request")?;
        let sent = last.json()["options"]["num_ctx"].as_u64();
        if (p == "bridge") != (sent == Some(8192)) {
            bail!("the {p} path sent num_ctx {sent:?}: the rewrite path is not what it should be");
        }
        double.clear();
    }
    eprintln!("bench: all paths answer; bridge-host rewrites num_ctx");

    // Small requests.
    for mode in [Mode::KeepAlive, Mode::NewConn] {
        for conc in [1, 8, 64] {
            for p in PATHS {
                let cpu_pids: Vec<u32> = match p {
                    "socat" => vec![socat.front.pid(), socat.back.pid()],
                    "bridge" => vec![guest.pid(), host.pid()],
                    _ => vec![],
                };
                let cpu0: f64 = cpu_pids.iter().map(|&q| procs::cpu_secs(q)).sum();
                let mut r = client_rt.block_on(load::requests(
                    addr_of(p),
                    mode,
                    conc,
                    plan.warm,
                    plan.measure,
                ));
                if p == "socat" {
                    for &q in &cpu_pids {
                        if !procs::wait_children_gone(q) {
                            eprintln!(
                                "bench: socat {q} still has children; its CPU time is incomplete"
                            );
                        }
                    }
                }
                let cpu1: f64 = cpu_pids.iter().map(|&q| procs::cpu_secs(q)).sum();
                double.clear();
                let (p50, p99) = report::pct_us(&mut r.latency_ns);
                let cell = ReqCell {
                    mode: mode.name(),
                    concurrency: conc,
                    path: p,
                    p50_us: p50,
                    p99_us: p99,
                    req_per_s: r.latency_ns.len() as f64 / r.window.as_secs_f64(),
                    measured: r.latency_ns.len(),
                    total: r.total,
                    errors: r.errors,
                    cpu_ms_per_1k: (!cpu_pids.is_empty() && r.total > 0)
                        .then(|| (cpu1 - cpu0) * 1000.0 / r.total as f64 * 1000.0),
                };
                eprintln!(
                    "bench: {:10} c={:<3} {:6}: p50 {:7.0} µs p99 {:7.0} µs {:8.0} req/s errors {}{}",
                    cell.mode, conc, p, p50, p99, cell.req_per_s, r.errors,
                    r.first_error.map(|e| format!(" (first: {e})")).unwrap_or_default()
                );
                res.requests.push(cell);
            }
        }
    }

    // Streams: stamped chunks at a fixed pace, then all at once.
    let scenarios = [
        (
            format!("1 stream, {} chunks every 1 ms", plan.chunks),
            1usize,
            Duration::from_millis(1),
            plan.single_reps,
        ),
        (
            format!(
                "{} streams, {} chunks every {} ms",
                plan.many,
                plan.chunks,
                plan.many_pace.as_millis()
            ),
            plan.many,
            plan.many_pace,
            1,
        ),
        (
            format!("{} streams, {} chunks at once", plan.many, plan.chunks),
            plan.many,
            Duration::ZERO,
            1,
        ),
    ];
    for (name, n, pace, reps) in &scenarios {
        double.set_script(stamped(plan.chunks, *pace));
        for p in PATHS {
            let mut all = load::Streams::default();
            let mut wall = Duration::ZERO;
            for _ in 0..*reps {
                let s = client_rt.block_on(load::streams(addr_of(p), *n));
                all.stats.latency_ns.extend(s.stats.latency_ns);
                all.stats.lines += s.stats.lines;
                all.stats.coalesced_reads += s.stats.coalesced_reads;
                all.stats.reads_with_lines += s.stats.reads_with_lines;
                all.errors += s.errors;
                all.first_error = all.first_error.or(s.first_error);
                wall += s.wall;
            }
            double.clear();
            let (p50, p99) = report::pct_us(&mut all.stats.latency_ns);
            let cell = StreamCell {
                scenario: name.clone(),
                streams: *n,
                chunks_per_stream: plan.chunks,
                pace_ms: pace.as_secs_f64() * 1000.0,
                path: p,
                p50_us: p50,
                p99_us: p99,
                chunks_per_s: all.stats.latency_ns.len() as f64 / wall.as_secs_f64(),
                chunks: all.stats.latency_ns.len() as u64,
                coalesced_reads: all.stats.coalesced_reads,
                reads_with_chunks: all.stats.reads_with_lines,
                errors: all.errors,
            };
            eprintln!(
                "bench: {name} {p:6}: p50 {p50:7.0} µs p99 {p99:7.0} µs {:8.0} chunks/s coalesced {}/{} errors {}{}",
                cell.chunks_per_s, cell.coalesced_reads, cell.reads_with_chunks, all.errors,
                all.first_error.map(|e| format!(" (first: {e})")).unwrap_or_default()
            );
            res.streams.push(cell);
        }
    }

    // A large body through the rewrite path.
    double.set_script(Script::default());
    let body = load::big_body(plan.big_bytes);
    for p in PATHS {
        let mut lat = client_rt
            .block_on(load::big(addr_of(p), &body, plan.big_reps))
            .map_err(|e| anyhow::anyhow!("large body on the {p} path: {e}"))?;
        double.clear();
        let (p50, _) = report::pct_us(&mut lat);
        let cell = BigCell {
            path: p,
            body_bytes: body.len(),
            p50_ms: p50 / 1000.0,
            min_ms: lat[0] as f64 / 1e6,
            reps: lat.len(),
        };
        eprintln!(
            "bench: {} byte body {p:6}: p50 {:.1} ms min {:.1} ms",
            body.len(),
            cell.p50_ms,
            cell.min_ms
        );
        res.big.push(cell);
    }
    drop(body);

    // Memory: idle after the run, then with many streams held open.
    res.mem.guest_idle_end_kib = procs::status_kib(guest.pid(), "VmRSS");
    res.mem.host_idle_end_kib = procs::status_kib(host.pid(), "VmRSS");
    double.set_script(stamped(1000, Duration::from_millis(20)));
    res.mem.held_streams = plan.held;
    for p in ["bridge", "socat"] {
        let held = {
            let _g = client_rt.enter();
            load::hold_streams(addr_of(p), plan.held)
        };
        client_rt.block_on(wait_requests(&double, plan.held))?;
        let mut m = Mem::default();
        for _ in 0..5 {
            if p == "bridge" {
                m.guest_streams_kib = m
                    .guest_streams_kib
                    .max(procs::status_kib(guest.pid(), "VmRSS"));
                m.host_streams_kib = m
                    .host_streams_kib
                    .max(procs::status_kib(host.pid(), "VmRSS"));
            } else {
                let mut pids = vec![socat.front.pid(), socat.back.pid()];
                pids.extend(procs::children(socat.front.pid()));
                pids.extend(procs::children(socat.back.pid()));
                m.socat_streams_procs = m.socat_streams_procs.max(pids.len());
                let pss: u64 = pids.iter().map(|&q| procs::pss_kib(q)).sum();
                m.socat_streams_pss_kib = m.socat_streams_pss_kib.max(pss);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for h in held {
            h.abort();
        }
        double.clear();
        if p == "bridge" {
            res.mem.guest_streams_kib = m.guest_streams_kib;
            res.mem.host_streams_kib = m.host_streams_kib;
        } else {
            res.mem.socat_streams_procs = m.socat_streams_procs;
            res.mem.socat_streams_pss_kib = m.socat_streams_pss_kib;
        }
    }
    res.mem.guest_hwm_kib = procs::status_kib(guest.pid(), "VmHWM");
    res.mem.host_hwm_kib = procs::status_kib(host.pid(), "VmHWM");
    res.machine.load_after = loadavg();

    print!("{}", res.markdown());
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&res)? + "\n")
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("bench: results written to {}", out.display());
    }
    drop((guest, host, socat));
    procs::kill_all();
    drop(double);
    client_rt.shutdown_timeout(Duration::from_secs(1));
    double_rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
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

/// Waits until the double has received `n` requests (so `n` streams are open).
async fn wait_requests(double: &Double, n: usize) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while double.requests().len() < n {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "only {} of {n} streams reached the double in 30 s",
                double.requests().len()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine() -> report::Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let rustc = std::process::Command::new("rustc")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    report::Machine {
        date: protocol::audit::rfc3339_millis(now_ms),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        rustc,
        ..report::Machine::default()
    }
}
