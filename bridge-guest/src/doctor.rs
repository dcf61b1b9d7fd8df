//! `bridge-guest doctor`: checks each hop from inside the sandbox, in order, and says
//! which one is broken and what to do about it.

use std::process::ExitCode;
use std::time::Duration;

use protocol::listen::ConnectAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::Addrs;

fn ok(what: &str) {
    println!("ok    {what}");
}

fn fail(what: &str, fix: &str, code: u8) -> ExitCode {
    println!("FAIL  {what}\n      fix: {fix}");
    ExitCode::from(code)
}

/// Sends one HTTP/1.1 request over a fresh connection to bridge-host; returns status and body.
pub async fn request(
    to: &ConnectAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = crate::relay::connect(to).await?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 30s"))??;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Runs the checks; exits non-zero at the first failure (2 socket, 3 host, 4 Ollama, 5 model).
pub async fn run(addrs: &Addrs, model: Option<&str>) -> ExitCode {
    if let ConnectAddr::Unix(p) = &addrs.connect {
        match std::fs::metadata(p) {
            Ok(_) => ok(&format!("socket {} exists", p.display())),
            Err(e) => {
                return fail(
                    &format!("socket {}: {e}", p.display()),
                    "bind-mount bridge-host's socket directory into the sandbox (the directory, not the socket file) and check --connect",
                    2,
                )
            }
        }
    }
    let (status, body) = match request(&addrs.connect, "GET", "/api/version", None).await {
        Ok(r) => r,
        Err(e) => {
            let fix = if e.kind() == std::io::ErrorKind::PermissionDenied {
                "the socket's mode or owner does not admit this user: set socket_owner/socket_mode for this sandbox in bridge-host's config"
            } else {
                "start bridge-host on the host (bridge-host serve) and check that this sandbox's listener is configured"
            };
            return fail(
                &format!("connect to bridge-host at {}: {e}", addrs.connect),
                fix,
                3,
            );
        }
    };
    ok(&format!("bridge-host answers at {}", addrs.connect));
    if status != 200 {
        return fail(
            &format!("Ollama through bridge-host: HTTP {status}: {}", body.trim()),
            "start Ollama on the host, or fix [upstream] url in bridge-host's config",
            4,
        );
    }
    ok(&format!(
        "Ollama reachable through bridge-host: {}",
        body.trim()
    ));
    if let Some(m) = model {
        let req = format!("{{\"model\":{}}}", serde_json_string(m));
        match request(&addrs.connect, "POST", "/api/show", Some(&req)).await {
            Ok((200, _)) => ok(&format!("model {m} is allowed and present")),
            Ok((s, b)) => {
                return fail(
                    &format!("model {m}: HTTP {s}: {}", b.trim()),
                    "allow the model in this sandbox's `models` list, or pull it on the host",
                    5,
                )
            }
            Err(e) => {
                return fail(
                    &format!("model {m}: {e}"),
                    "retry; check bridge-host's log",
                    5,
                )
            }
        }
    }
    ExitCode::SUCCESS
}

fn serde_json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
