//! Benchmark (issue 9): the bridge (bridge-guest → bridge-host with policy and num_ctx
//! rewrite → Ollama) against a direct connection and against the socat pair (as in the
//! issue, and tuned), side by side in one run, with the Ollama test double in-process
//! answering at once or at a fixed pace. Prints markdown tables and writes the results
//! as JSON (`--out`); `tests/bench/plot.py` draws the latency plot from that file.
//!
//! Build and run (release builds only):
//! `cargo build --release --locked -p bridge-host -p bridge-guest -p ollama-bridge-tests --bins`
//! then `target/release/bench --out docs/bench-results.json` (`--quick` for a smoke run).

mod client;
mod fairness;
mod gateway;
mod load;
mod procs;
mod report;
mod sections;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use bridge_tests::double::{stamp, Double, DoubleConfig};
use clap::Parser;

use report::Results;

#[derive(Parser)]
#[command(about = "Benchmark: direct vs socat pair vs bridge-guest → bridge-host")]
pub struct Args {
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
    /// Only these sections (for profiling): requests, streams, big, mem, fairness,
    /// gateway (with --litellm).
    #[arg(long, value_delimiter = ',')]
    sections: Vec<String>,
    /// Only these paths (for profiling): direct, socat, socat-tuned, bridge (the guest
    /// relays: hand-off off), bridge-handoff (the guest hands connections over); also
    /// `bridge-noqueue` (only when named): a second bridge with `max_parallel = "off"`,
    /// to measure what the fair queue costs when nothing waits (`bridge` runs with a
    /// queue of 1024 slots, more than any concurrency here).
    #[arg(long, value_delimiter = ',')]
    paths: Vec<String>,
    /// Also measure each hop on its own: bridge-guest in front of socat's host half
    /// (`guest+socat`) and socat's sandbox half in front of bridge-host (`socat+host`).
    #[arg(long)]
    hops: bool,
    /// LiteLLM's proxy executable (`pip install 'litellm[proxy]'`): adds the gateway
    /// section, the same OpenAI request through LiteLLM, the bridge and Ollama's /v1.
    #[arg(long, value_name = "PATH")]
    litellm: Option<PathBuf>,
    /// Another bridge-host build beside `bridge`, as `NAME=PATH` (repeatable): runs as
    /// the path `bridge@NAME` with its own bridge-guest and the same configuration, to
    /// compare builds (before/after a change) in one run.
    #[arg(long, value_name = "NAME=PATH")]
    host_variant: Vec<String>,
    /// Measuring window of each small-request run, in milliseconds.
    #[arg(long)]
    measure_ms: Option<u64>,
}

/// Counts and durations of a run.
pub struct Plan {
    pub warm: Duration,
    pub measure: Duration,
    pub chunks: usize,
    pub single_reps: usize,
    pub many: usize,
    pub many_pace: Duration,
    pub big_bytes: usize,
    pub big_reps: usize,
    pub held: usize,
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
                warm: Duration::from_millis(400),
                measure: Duration::from_millis(2000),
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    procs::install_cleanup();
    stamp::epoch();
    let mut plan = Plan::new(args.quick);
    if let Some(ms) = args.measure_ms {
        plan.measure = Duration::from_millis(ms);
    }
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
    let (host, socket) = procs::start_host(&host_bin, dir.path(), double.addr(), "1024")?;
    let (guest, guest_addr) = procs::start_guest(&guest_bin, &socket, false)?;
    let path_wanted = |n: &str| args.paths.is_empty() || args.paths.iter().any(|a| a == n);
    let mut all_paths = vec![
        sections::Path {
            name: "direct",
            addr: double.addr(),
            pids: vec![],
            forks: false,
        },
        sections::Path {
            name: "bridge",
            addr: guest_addr,
            pids: vec![guest.pid(), host.pid()],
            forks: false,
        },
    ];
    let mut extra = Vec::new();
    if args.paths.iter().any(|p| p == "bridge-noqueue") {
        let d = dir.path().join("noqueue");
        std::fs::create_dir_all(&d)?;
        let (h, sock) = procs::start_host(&host_bin, &d, double.addr(), "\"off\"")?;
        let (g, addr) = procs::start_guest(&guest_bin, &sock, false)?;
        all_paths.push(sections::Path {
            name: "bridge-noqueue",
            addr,
            pids: vec![g.pid(), h.pid()],
            forks: false,
        });
        extra.extend([g, h]);
    }
    let mut socats = Vec::new();
    for (name, tuned) in [("socat", false), ("socat-tuned", true)] {
        if path_wanted(name) || (tuned && args.hops) {
            let s = procs::start_socat(dir.path(), double.addr(), tuned)?;
            all_paths.insert(
                all_paths.len() - 1,
                sections::Path {
                    name,
                    addr: s.addr,
                    pids: vec![s.front.pid(), s.back.pid()],
                    forks: true,
                },
            );
            socats.push(s);
        }
    }
    // The same host, with a guest that hands each connection over (one hop); `bridge`
    // is the relay (the guest's hand-off switched off).
    let mut handoff_guest = None;
    if path_wanted("bridge-handoff") {
        let (g, addr) = procs::start_guest(&guest_bin, &socket, true)?;
        all_paths.push(sections::Path {
            name: "bridge-handoff",
            addr,
            pids: vec![g.pid(), host.pid()],
            forks: false,
        });
        handoff_guest = Some((g.pid(), addr));
        extra.push(g);
    }
    for v in &args.host_variant {
        let Some((name, bin)) = v.split_once('=') else {
            bail!("--host-variant wants NAME=PATH, got {v:?}");
        };
        let d = dir.path().join(format!("variant-{name}"));
        std::fs::create_dir_all(&d)?;
        let (h, sock) = procs::start_host(bin.as_ref(), &d, double.addr(), "1024")?;
        let (g, addr) = procs::start_guest(&guest_bin, &sock, false)?;
        let name: &'static str = Box::leak(format!("bridge@{name}").into_boxed_str());
        all_paths.push(sections::Path {
            name,
            addr,
            pids: vec![g.pid(), h.pid()],
            forks: false,
        });
        extra.extend([g, h]);
    }
    let mut hop_procs = Vec::new();
    if args.hops {
        let back = socats.last().expect("the tuned socat pair").back.pid();
        let (g, addr) =
            procs::start_guest(&guest_bin, &dir.path().join("socat-tuned.sock"), false)?;
        all_paths.push(sections::Path {
            name: "guest+socat",
            addr,
            pids: vec![g.pid(), back],
            forks: true,
        });
        let (f, addr) = procs::socat_front(&socket, true)?;
        all_paths.push(sections::Path {
            name: "socat+host",
            addr,
            pids: vec![f.pid(), host.pid()],
            forks: true,
        });
        hop_procs.extend([g, f]);
    }
    let paths: Vec<_> = all_paths
        .into_iter()
        .filter(|p| path_wanted(p.name) || p.name.starts_with("bridge@"))
        .collect();
    let want = |s: &str| args.sections.is_empty() || args.sections.iter().any(|a| a == s);
    let mut b = sections::Bench {
        double: &double,
        rt: &client_rt,
        plan: &plan,
        paths,
        guest: guest.pid(),
        handoff_guest: handoff_guest.map(|(pid, _)| pid),
        host: host.pid(),
        res: &mut res,
    };
    b.res.mem.guest_idle_start_kib = procs::status_kib(guest.pid(), "VmRSS");
    b.res.mem.host_idle_start_kib = procs::status_kib(host.pid(), "VmRSS");
    if let Some((pid, _)) = handoff_guest {
        b.res.mem.handoff_guest = Some(report::GuestMem {
            idle_start_kib: procs::status_kib(pid, "VmRSS"),
            ..Default::default()
        });
    }
    b.sanity()?;
    if want("requests") {
        b.requests();
    }
    if want("streams") {
        b.streams();
    }
    // Memory before the large bodies, whose buffers the allocator keeps afterwards.
    if want("mem") {
        b.mem();
    }
    if want("big") {
        b.big()?;
    }
    let mut gateway_md = String::new();
    if let Some(lite) = args.litellm.as_deref().filter(|_| want("gateway")) {
        res.gateway = gateway::run(
            &client_rt,
            lite,
            double.addr(),
            // The bridge as it runs by default: the guest hands connections over.
            handoff_guest.map_or(guest_addr, |(_, addr)| addr),
            plan.warm,
            plan.measure,
        )?;
        gateway_md = gateway::markdown(&res.gateway);
    }
    let mut fairness_md = String::new();
    if want("fairness") {
        let load = if args.quick {
            fairness::Load {
                a_clients: 4,
                b_requests: 3,
                per_request: Duration::from_millis(5),
            }
        } else {
            fairness::Load {
                a_clients: 8,
                b_requests: 40,
                per_request: Duration::from_millis(20),
            }
        };
        res.fairness = fairness::run(&client_rt, &host_bin, &guest_bin, &load)?;
        fairness_md = fairness::markdown(&res.fairness, &load);
    }
    res.machine.load_after = loadavg();

    print!("{}{fairness_md}{gateway_md}", res.markdown());
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&res)? + "\n")?;
        eprintln!("bench: results written to {}", out.display());
    }
    drop((guest, host, socats, hop_procs, extra));
    procs::kill_all();
    drop(double);
    client_rt.shutdown_timeout(Duration::from_secs(1));
    double_rt.shutdown_timeout(Duration::from_secs(1));
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
