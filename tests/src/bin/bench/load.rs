//! The workloads, run on the client's runtime against one address: small requests at
//! a concurrency (keep-alive or a new connection per request), concurrent stamped
//! streams, a large request body, and streams held open for a memory reading.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{self, Conn, StreamStats};

/// How connections are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    KeepAlive,
    NewConn,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keep-alive",
            Mode::NewConn => "new-conn",
        }
    }
}

/// What one run of small requests produced.
#[derive(Debug, Default)]
pub struct Requests {
    /// Latencies (ns) of requests started and finished inside the measuring window.
    pub latency_ns: Vec<u64>,
    pub window: Duration,
    /// Every successful request, warm-up included (for CPU per request).
    pub total: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// `conc` clients send small chat requests (`stream:false`) for `warm` + `measure`.
/// With keep-alive every client connects first and the clock starts once all are
/// connected (steady state); with a new connection per request, connecting is part of
/// every request. Latencies are those of requests started inside the measuring window.
pub async fn requests(
    addr: SocketAddr,
    mode: Mode,
    conc: usize,
    warm: Duration,
    measure: Duration,
) -> Requests {
    let close = mode == Mode::NewConn;
    let req: Arc<[u8]> = client::request("/api/chat", &client::small_chat(), close).into();
    requests_with(addr, mode, conc, warm, measure, req).await
}

/// [`requests`] with another request (bytes on the wire, whole).
pub async fn requests_with(
    addr: SocketAddr,
    mode: Mode,
    conc: usize,
    warm: Duration,
    measure: Duration,
    req: Arc<[u8]>,
) -> Requests {
    let close = mode == Mode::NewConn;
    let mut conns = Vec::new();
    for _ in 0..conc {
        conns.push(match mode {
            Mode::KeepAlive => Some(tokio::spawn(Conn::connect(addr))),
            Mode::NewConn => None,
        });
    }
    let mut ready = Vec::new();
    for c in conns {
        ready.push(match c {
            Some(t) => t.await.expect("connect task").ok(),
            None => None,
        });
    }
    let start = Instant::now();
    let (ws, we) = (start + warm, start + warm + measure);
    let mut tasks = Vec::new();
    for mut conn in ready {
        let req = req.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Requests::default();
            loop {
                let t0 = Instant::now();
                if t0 >= we {
                    break;
                }
                let res = async {
                    let mut c = match conn.take() {
                        Some(c) => c,
                        None => Conn::connect(addr).await?,
                    };
                    let r = c.exchange(&req).await?;
                    if !close {
                        conn = Some(c);
                    }
                    std::io::Result::Ok(r)
                }
                .await;
                let t1 = Instant::now();
                match res {
                    Ok(r) if r.status == 200 && r.body_len > 0 => {
                        out.total += 1;
                        if t0 >= ws {
                            out.latency_ns.push((t1 - t0).as_nanos() as u64);
                        }
                    }
                    Ok(r) => {
                        out.errors += 1;
                        out.first_error
                            .get_or_insert(format!("status {}", r.status));
                    }
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert(e.to_string());
                    }
                }
            }
            out
        }));
    }
    let mut all = Requests {
        window: measure,
        ..Requests::default()
    };
    for t in tasks {
        let r = t.await.expect("client task");
        all.latency_ns.extend(r.latency_ns);
        all.total += r.total;
        all.errors += r.errors;
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
    }
    all
}

/// What a set of concurrent streams produced.
#[derive(Debug, Default)]
pub struct Streams {
    pub stats: StreamStats,
    pub wall: Duration,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// `n` concurrent streamed chat requests, read to their end.
pub async fn streams(addr: SocketAddr, n: usize, tools: bool) -> Streams {
    let body = if tools {
        client::stream_chat_tools()
    } else {
        client::stream_chat()
    };
    let req: Arc<[u8]> = client::request("/api/chat", &body, false).into();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let req = req.clone();
        tasks.push(tokio::spawn(async move {
            let mut stats = StreamStats::default();
            let r = async {
                let mut c = Conn::connect(addr).await?;
                c.stream(&req, &mut stats).await
            }
            .await;
            (stats, r)
        }));
    }
    let mut out = Streams::default();
    for t in tasks {
        let (s, r) = t.await.expect("stream task");
        out.stats.latency_ns.extend(s.latency_ns);
        out.stats.lines += s.lines;
        out.stats.coalesced_reads += s.coalesced_reads;
        out.stats.held_reads += s.held_reads;
        out.stats.reads_with_lines += s.reads_with_lines;
        if let Err(e) = r {
            out.errors += 1;
            out.first_error.get_or_insert(e.to_string());
        }
    }
    out.wall = start.elapsed();
    out
}

/// Sends `body` to /api/chat `reps` times on one connection after one warm-up request;
/// returns the latencies (ns).
pub async fn big(addr: SocketAddr, body: &[u8], reps: usize) -> Result<Vec<u64>, String> {
    let req = client::request("/api/chat", body, false);
    let mut c = Conn::connect(addr).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for i in 0..=reps {
        let t0 = Instant::now();
        let r = c.exchange(&req).await.map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("status {}", r.status));
        }
        if i > 0 {
            out.push(t0.elapsed().as_nanos() as u64);
        }
    }
    Ok(out)
}

/// Opens `n` streams and keeps them running (the double paces them slowly); aborting
/// the tasks closes them. A task that ends on its own returns why.
pub fn hold_streams(addr: SocketAddr, n: usize) -> Vec<tokio::task::JoinHandle<String>> {
    let req: Arc<[u8]> = client::request("/api/chat", &client::stream_chat(), false).into();
    (0..n)
        .map(|_| {
            let req = req.clone();
            tokio::spawn(async move {
                let mut stats = StreamStats::default();
                let r = async {
                    let mut c = Conn::connect(addr).await?;
                    c.stream(&req, &mut stats).await
                }
                .await;
                match r {
                    Ok(()) => "ended".to_owned(),
                    Err(e) => e.to_string(),
                }
            })
        })
        .collect()
}

/// A 20 MiB-class chat request: one message with a base64 "image" of `b64_len` bytes.
pub fn big_body(b64_len: usize) -> Vec<u8> {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut img = Vec::with_capacity(b64_len);
    for _ in 0..b64_len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        img.push(B64[(x & 63) as usize]);
    }
    let mut body = br#"{"model":"qwen2.5:7b","stream":false,"messages":[{"role":"user","content":"What is in this picture?","images":[""#.to_vec();
    body.extend_from_slice(&img);
    body.extend_from_slice(br#""]}]}"#);
    body
}
