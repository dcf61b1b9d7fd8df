//! `bridge-host status` with several upstream servers: one line per server, asked
//! directly from the host (the operator's view; a sandbox never sees it): is it up
//! (`/api/version`), which models it has loaded (`/api/ps`), and its fair queue as the
//! daemon's metrics listener last saw it (when `[metrics] listen` is set).

use std::time::Duration;

use protocol::config::{Config, MetricsListen};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest wait for one answer.
const LIMIT: Duration = Duration::from_secs(10);

/// GET `path` on a stream: the status code and the (decoded) body.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    host: &str,
    path: &str,
) -> Result<(String, String), String> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let talk = async {
        s.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let out = tokio::time::timeout(LIMIT, talk)
        .await
        .map_err(|_| format!("no answer within {LIMIT:?}"))?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = protocol::chunked::split_answer(&text);
    let code = head.split(' ').nth(1).unwrap_or("?").to_owned();
    Ok((code, body))
}

/// A server's JSON answer at `path`.
async fn ask(authority: &str, path: &str) -> Result<Value, String> {
    let s = tokio::time::timeout(LIMIT, tokio::net::TcpStream::connect(authority))
        .await
        .map_err(|_| format!("no connection within {LIMIT:?}"))?
        .map_err(|e| e.to_string())?;
    match get(s, authority, path).await? {
        (code, body) if code == "200" => {
            serde_json::from_str(&body).map_err(|e| format!("{path}: not JSON: {e}"))
        }
        (code, _) => Err(format!("{path}: HTTP {code}")),
    }
}

/// The daemon's metrics text, when it has a metrics listener.
async fn metrics(at: &MetricsListen) -> Option<String> {
    let (code, body) = match at {
        MetricsListen::Tcp(a) => {
            let s = tokio::net::TcpStream::connect(a).await.ok()?;
            get(s, "localhost", "/metrics").await.ok()?
        }
        MetricsListen::Unix(p) => {
            let s = tokio::net::UnixStream::connect(p).await.ok()?;
            get(s, "localhost", "/metrics").await.ok()?
        }
    };
    (code == "200").then_some(body)
}

/// A server's gauge in the metrics text.
fn gauge(text: &str, name: &str, server: &str) -> Option<u64> {
    let prefix = format!("ollama_bridge_{name}{{server=\"{server}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Prints each server's line (or JSON object); true when every server answers.
pub fn report(rt: &tokio::runtime::Runtime, config: &Config, json: bool) -> bool {
    let metrics = config
        .metrics
        .as_ref()
        .and_then(|m| rt.block_on(metrics(m)));
    if !json {
        println!();
        println!(
            "{:<16} {:<32} {:<6} {:>14}  LOADED",
            "SERVER", "URL", "STATE", "QUEUE"
        );
    }
    let mut all_up = true;
    for s in &config.servers {
        let version = rt.block_on(ask(&s.authority, "/api/version"));
        let ps = rt.block_on(ask(&s.authority, "/api/ps"));
        let loaded: Vec<String> = ps
            .as_ref()
            .ok()
            .and_then(|v| v["models"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m["name"].as_str().map(str::to_owned))
            .collect();
        let queue = metrics.as_deref().and_then(|t| {
            let running = gauge(t, "upstream_running_requests", &s.name)?;
            let waiting = gauge(t, "upstream_waiting_requests", &s.name)?;
            Some((running, waiting))
        });
        all_up &= version.is_ok();
        let state = match &version {
            Ok(v) => format!("up {}", v["version"].as_str().unwrap_or("?")),
            Err(e) => format!("DOWN: {e}"),
        };
        if json {
            let line = serde_json::json!({
                "server": s.name, "url": s.base, "up": version.is_ok(),
                "error": version.as_ref().err(), "loaded": loaded,
                "queue": queue.map(|(r, w)| serde_json::json!({"running": r, "waiting": w})),
            });
            println!("{line}");
        } else {
            let q = queue.map_or("-".to_owned(), |(r, w)| format!("{r} run, {w} wait"));
            let up = if version.is_ok() { "up" } else { "down" };
            println!(
                "{:<16} {:<32} {:<6} {:>14}  {}",
                s.name,
                s.base,
                up,
                q,
                if version.is_ok() {
                    loaded.join(", ")
                } else {
                    state
                },
            );
        }
    }
    all_up
}
