//! The fairness figure (issue 18): sandbox A saturates an Ollama that works on one
//! request at a time (the double with `parallel = 1` and a fixed 20 ms per request,
//! queueing the rest in arrival order as Ollama's scheduler does), while sandbox B sends
//! one request at a time. B's latency is measured twice in one run: with the bridge's
//! queue off (`max_parallel = "off"`: every request goes to "Ollama" at once and waits
//! there, FIFO) and with the fair queue (`max_parallel = 1`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge_tests::double::{Double, DoubleConfig, Script};
use serde::Serialize;

use crate::client::{request, small_chat, Conn};
use crate::procs;

/// One mode's figures.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Mode {
    pub mode: String,
    pub b_requests: usize,
    pub b_p50_ms: f64,
    pub b_p99_ms: f64,
    pub a_completed: u64,
}

/// A's clients, B's requests and the time "Ollama" takes per request.
pub struct Load {
    pub a_clients: usize,
    pub b_requests: usize,
    pub per_request: Duration,
}

fn config(dir: &Path, upstream: SocketAddr, max_parallel: &str) -> String {
    let mut s = format!(
        "[upstream]\nurl = \"http://{upstream}\"\nmax_parallel = {max_parallel}\n\n[audit]\npath = \"{}/audit.jsonl\"\n\n",
        dir.display()
    );
    for name in ["a", "b"] {
        s.push_str(&format!(
            "[[sandbox]]\nname = \"{name}\"\nlisten = \"unix:{}/{name}/ollama.sock\"\nmodels = [\"qwen2.5:*\"]\n\n",
            dir.display()
        ));
    }
    s
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Runs both modes; `rt` runs the double and the clients.
pub fn run(
    rt: &tokio::runtime::Runtime,
    host_bin: &Path,
    guest_bin: &Path,
    load: &Load,
) -> anyhow::Result<Vec<Mode>> {
    let double = rt.block_on(Double::start(DoubleConfig {
        parallel: Some(1),
        script: Script {
            head_delay: load.per_request,
            ..Script::default()
        },
        ..DoubleConfig::default()
    }));
    let mut out = Vec::new();
    for (mode, max_parallel) in [
        ("fifo (queue off)", "\"off\""),
        ("fair (max_parallel = 1)", "1"),
    ] {
        let dir = tempfile::tempdir()?;
        let host = procs::start_host_cfg(
            host_bin,
            dir.path(),
            &config(dir.path(), double.addr(), max_parallel),
            2,
        )?;
        let (ga, a) = procs::start_guest(guest_bin, &dir.path().join("a/ollama.sock"), false)?;
        let (gb, b) = procs::start_guest(guest_bin, &dir.path().join("b/ollama.sock"), false)?;
        let m = rt.block_on(measure(a, b, load))?;
        out.push(Mode {
            mode: mode.into(),
            ..m
        });
        drop((ga, gb, host));
    }
    Ok(out)
}

async fn measure(a: SocketAddr, b: SocketAddr, load: &Load) -> anyhow::Result<Mode> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let req = request("/api/chat", &small_chat(), false);
    let mut tasks = Vec::new();
    for _ in 0..load.a_clients {
        let (stop, done, req) = (stop.clone(), done.clone(), req.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::connect(a).await?;
            while !stop.load(Ordering::Relaxed) {
                c.exchange(&req).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    // A saturates first: every client has a request in.
    while done.load(Ordering::Relaxed) < load.a_clients as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut c = Conn::connect(b).await?;
    let mut lat = Vec::with_capacity(load.b_requests);
    for _ in 0..load.b_requests {
        let t = Instant::now();
        let r = c.exchange(&req).await?;
        anyhow::ensure!(r.status == 200, "B got {}", r.status);
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    stop.store(true, Ordering::Relaxed);
    let a_completed = done.load(Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    lat.sort_by(f64::total_cmp);
    Ok(Mode {
        mode: String::new(),
        b_requests: lat.len(),
        b_p50_ms: percentile(&lat, 0.5),
        b_p99_ms: percentile(&lat, 0.99),
        a_completed,
    })
}

/// The markdown table.
pub fn markdown(modes: &[Mode], load: &Load) -> String {
    let mut s = format!(
        "\n### Fairness: B's latency while A saturates (A: {} clients back to back; \"Ollama\": one request at a time, {} ms each)\n\n| mode | B requests | B p50 ms | B p99 ms | A completed meanwhile |\n|---|---:|---:|---:|---:|\n",
        load.a_clients,
        load.per_request.as_millis()
    );
    for m in modes {
        s.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {} |\n",
            m.mode, m.b_requests, m.b_p50_ms, m.b_p99_ms, m.a_completed
        ));
    }
    s
}
