//! `bridge-host status`: asks every configured listener of the running daemon for its
//! `/_bridge/status`, so an operator sees at a glance which sandbox is served, how busy
//! it is, and whether Ollama answers.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use protocol::route::STATUS_PATH;
use protocol::ListenAddr;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::config::{defaults_env, load_config, DEFAULT_CONFIG, EXIT_CONFIG};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Configuration of the running daemon [default: /etc/ollama-bridge/bridge.toml if it exists, else built-in defaults].
    #[arg(long, value_name = "PATH", conflicts_with = "listen")]
    pub config: Option<PathBuf>,
    /// Probe this listener instead (a quick-start daemon: the `--listen` it was started with).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// With --listen: the daemon's upstream, named when Ollama is down [default: http://127.0.0.1:11434].
    #[arg(long, value_name = "URL", requires = "listen")]
    pub upstream: Option<String>,
    /// Print one JSON object per listener instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The listener's status document; `Ok(Err(..))` when it answered with an HTTP error
/// instead (e.g. 429: status calls have their own rate limit).
async fn fetch(path: &std::path::Path) -> Result<Result<Value, String>, String> {
    let talk = async {
        let mut s = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| e.to_string())?;
        let req =
            format!("GET {STATUS_PATH} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out).into_owned();
        if !text.contains("\r\n\r\n") {
            return Err("no HTTP answer".to_owned());
        }
        let (head, body) = protocol::chunked::split_answer(&text);
        let code = head.split(' ').nth(1).unwrap_or("?");
        if code != "200" {
            let v = serde_json::from_str::<Value>(&body).unwrap_or_default();
            let msg = v["error"].as_str().unwrap_or(body.trim());
            return Ok(Err(format!("the listener answered HTTP {code}: {msg}")));
        }
        serde_json::from_str::<Value>(&body)
            .map(Ok)
            .map_err(|e| format!("not the bridge's status: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(30), talk)
        .await
        .map_err(|_| "no answer within 30s".to_owned())?
}

/// The sandbox's token budgets under its row, when it has one: per window, used of the
/// budget and what is left, or when a spent budget refills.
fn tokens_line(t: &Value) -> Option<String> {
    let mut parts = Vec::new();
    for w in ["hour", "day"] {
        let v = &t[w];
        let Some(budget) = v["budget"].as_u64() else {
            continue;
        };
        let used = v["used"].as_u64().unwrap_or(0);
        let state = match (v["refills_in_s"].as_u64(), v["refills_at"].as_str()) {
            (Some(s), Some(at)) => format!("SPENT, refills at {at} (in {s} s)"),
            _ => format!("{} left", v["left"].as_u64().unwrap_or(0)),
        };
        parts.push(format!("per {w} {used}/{budget} ({state})"));
    }
    (!parts.is_empty()).then(|| format!("tokens: {}", parts.join("; ")))
}

/// Runs the subcommand: exit 0 when every probed listener answers and Ollama is reachable.
pub fn run(args: StatusArgs) -> ExitCode {
    let config = match (&args.listen, &args.config) {
        (Some(l), _) => protocol::Config::quick_start(
            &defaults_env(),
            l,
            args.upstream
                .as_deref()
                .unwrap_or(protocol::config::DEFAULT_UPSTREAM),
            &[],
            &protocol::config::QuickFlags::default(),
        ),
        (None, Some(p)) => load_config(p),
        (None, None) if std::path::Path::new(DEFAULT_CONFIG).exists() => {
            load_config(std::path::Path::new(DEFAULT_CONFIG))
        }
        (None, None) => Ok(protocol::Config::builtin(&defaults_env())),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bridge-host status: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bridge-host status: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut healthy = true;
    if !args.json {
        println!(
            "{:<16} {:<52} {:<6} {:>9} {:>14}  OLLAMA",
            "SANDBOX", "LISTEN", "STATE", "IN_FLIGHT", "QUEUED"
        );
    }
    for sb in &config.sandboxes {
        let result = match &sb.listen {
            ListenAddr::Unix(p) | ListenAddr::VsockUds(p) => Some(rt.block_on(fetch(p))),
            ListenAddr::Vsock { .. } => None,
        };
        let (state, in_flight, ollama, doc) = match &result {
            None => (
                "-".to_owned(),
                "-".to_owned(),
                "(AF_VSOCK listeners are not probed from the host)".to_owned(),
                Value::Null,
            ),
            Some(Err(e)) => {
                healthy = false;
                ("down".to_owned(), "-".to_owned(), e.clone(), Value::Null)
            }
            Some(Ok(Err(e))) => {
                healthy = false;
                (
                    "up".to_owned(),
                    "-".to_owned(),
                    format!("unknown: {e}"),
                    Value::Null,
                )
            }
            Some(Ok(Ok(v))) => {
                let up = v["upstream"]["reachable"] == true;
                let several = config.servers.len() > 1;
                healthy &= up;
                let ollama = if up {
                    format!(
                        "up {}",
                        v["upstream"]["ollama_version"].as_str().unwrap_or("?")
                    )
                } else {
                    // The operator's view: which upstream (the sandbox's answer never says).
                    format!(
                        "DOWN: {} (upstream {})",
                        v["upstream"]["error"].as_str().unwrap_or("?"),
                        if several {
                            "servers below"
                        } else {
                            &config.upstream.base
                        }
                    )
                };
                let inf = v["in_flight"]
                    .as_u64()
                    .map_or("-".to_owned(), |n| n.to_string());
                ("up".to_owned(), inf, ollama, v.clone())
            }
        };
        if args.json {
            let line = serde_json::json!({
                "sandbox": sb.name.as_str(), "listen": sb.listen.to_string(), "state": state,
                "status": doc, "error": if doc.is_null() && state != "-" { Value::String(ollama.clone()) } else { Value::Null },
            });
            println!("{line}");
        } else {
            println!(
                "{:<16} {:<52} {:<6} {:>9} {:>14}  {ollama}",
                sb.name.as_str(),
                sb.listen.to_string(),
                state,
                in_flight,
                queued(&doc["queue"]),
            );
            if let Some(line) = tokens_line(&doc["tokens"]) {
                println!("{:<16} {line}", "");
            }
        }
    }
    // Several servers: each one's health, loaded models and queue (one server: the
    // OLLAMA column says it all).
    if config.servers.len() > 1 {
        healthy &= super::status_servers::report(&rt, &config, args.json);
    }
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A sandbox's waiting requests in the fair queue and the oldest one's wait: `2 (4.1s)`;
/// `-` without a queue or a status.
fn queued(q: &Value) -> String {
    match (q["waiting"].as_u64(), q["oldest_wait_ms"].as_u64()) {
        (Some(0), _) => "0".into(),
        (Some(n), Some(ms)) => format!("{n} ({:.1}s)", ms as f64 / 1000.0),
        _ => "-".into(),
    }
}
