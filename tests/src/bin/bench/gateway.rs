//! A gateway that users pick instead of a relay, in the same run (issue 20): LiteLLM's
//! proxy, configured with one `ollama_chat/` model pointing at the double and nothing
//! else, against the bridge and the double's own `/v1` layer, on the same OpenAI
//! request (`POST /v1/chat/completions`, `stream:false`; the bridge and LiteLLM serve it
//! through `/api/chat`). Runs only when `--litellm PATH` names its executable
//! (`pip install 'litellm[proxy]'`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::load::{self, Mode};
use crate::procs::{self, Proc};

const KEY: &str = "sk-ollama-bridge-bench";

/// One cell: a path at a concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub path: &'static str,
    pub concurrency: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub req_per_s: f64,
    pub errors: u64,
}

fn body() -> String {
    r#"{"model":"qwen2.5:7b","messages":[{"role":"user","content":"Say hello."}],"stream":false}"#
        .to_owned()
}

fn request(auth: bool) -> Arc<[u8]> {
    let b = body();
    let auth = if auth {
        format!("Authorization: Bearer {KEY}\r\n")
    } else {
        String::new()
    };
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{b}",
        b.len()
    )
    .into_bytes()
    .into()
}

/// Starts LiteLLM's proxy on a free port; waits until it answers.
fn start_litellm(bin: &Path, dir: &Path, double: SocketAddr) -> anyhow::Result<(Proc, SocketAddr)> {
    let cfg = dir.join("litellm.yaml");
    std::fs::write(
        &cfg,
        format!(
            "model_list:\n  - model_name: qwen2.5:7b\n    litellm_params:\n      model: ollama_chat/qwen2.5:7b\n      api_base: http://{double}\n"
        ),
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let child = procs::spawn(
        Command::new(bin)
            .arg("--config")
            .arg(&cfg)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--num_workers",
                "1",
            ])
            .env("LITELLM_MASTER_KEY", KEY)
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("LITELLM_LOG", "ERROR")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("litellm.stderr"))?),
    )?;
    let proc = Proc { child };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            use std::io::{Read, Write};
            let _ = s.write_all(
                b"GET /health/liveliness HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            );
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            if out.starts_with("HTTP/1.1 200") {
                return Ok((proc, addr));
            }
        }
        if Instant::now() > deadline {
            bail!(
                "LiteLLM did not answer within 180 s: {}",
                std::fs::read_to_string(dir.join("litellm.stderr")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the three paths at concurrency 1 and 8 (keep-alive).
pub fn run(
    rt: &tokio::runtime::Runtime,
    litellm: &Path,
    double: SocketAddr,
    bridge: SocketAddr,
    warm: Duration,
    measure: Duration,
) -> anyhow::Result<Vec<Cell>> {
    let dir = tempfile::tempdir()?;
    let (lite, lite_addr) =
        start_litellm(litellm, dir.path(), double).context("starting LiteLLM")?;
    let mut out = Vec::new();
    for conc in [1, 8] {
        for (path, addr, auth) in [
            ("direct (Ollama's /v1)", double, false),
            ("bridge", bridge, false),
            ("litellm", lite_addr, true),
        ] {
            let mut r = rt.block_on(load::requests_with(
                addr,
                Mode::KeepAlive,
                conc,
                warm,
                measure,
                request(auth),
            ));
            r.latency_ns.sort_unstable();
            let pct = |p: f64| {
                r.latency_ns
                    .get(((r.latency_ns.len() as f64 - 1.0) * p).round() as usize)
                    .map_or(0.0, |&n| n as f64 / 1000.0)
            };
            let cell = Cell {
                path,
                concurrency: conc,
                p50_us: pct(0.5),
                p99_us: pct(0.99),
                req_per_s: r.latency_ns.len() as f64 / r.window.as_secs_f64(),
                errors: r.errors,
            };
            eprintln!(
                "bench: gateway c={conc} {path:24}: p50 {:8.0} µs p99 {:8.0} µs {:7.0} req/s errors {}{}",
                cell.p50_us,
                cell.p99_us,
                cell.req_per_s,
                r.errors,
                r.first_error.map(|e| format!(" (first: {e})")).unwrap_or_default()
            );
            out.push(cell);
        }
    }
    drop(lite);
    Ok(out)
}

/// The markdown table.
pub fn markdown(cells: &[Cell]) -> String {
    let mut s = String::from(
        "\n### A gateway on the same request (POST /v1/chat/completions, `stream:false`, keep-alive)\n\n| conc. | path | p50 µs | p99 µs | req/s | errors |\n|---:|---|---:|---:|---:|---:|\n",
    );
    for c in cells {
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {} |\n",
            c.concurrency, c.path, c.p50_us, c.p99_us, c.req_per_s, c.errors
        ));
    }
    s
}
