//! `bridge-guest doctor`: checks each hop from inside the sandbox, in order, and stops at
//! the first broken one with what to do about it. Exit codes name the hop:
//! 1 listen address taken by something else, 2 no socket, 3 socket not accessible,
//! 4 bridge-host not running, 5 bridge-host answers wrongly, 6 Ollama unreachable,
//! 7 model not allowed, 8 model does not load.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::ExitCode;
use std::time::Duration;

use protocol::listen::ConnectAddr;
use protocol::{ModelName, ModelPattern};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::cli::Addrs;

/// The host's status endpoint.
pub const STATUS_PATH: &str = "/_bridge/status";

fn ok(what: &str) {
    println!("ok    {what}");
}

fn fail(code: u8, what: &str, fix: &str) -> ExitCode {
    println!("FAIL  {what}\n      fix: {fix}");
    ExitCode::from(code)
}

/// One HTTP/1.1 exchange on an open stream (Connection: close); returns status and body.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 60s"))??;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, protocol::chunked::split_answer(&text).1))
}

/// Sends one request over a fresh connection to bridge-host.
pub async fn request(
    to: &ConnectAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = crate::relay::connect(to).await?;
    exchange(&mut s, method, path, body).await
}

/// Who may open the socket, for the permission hint.
fn describe_access(path: &std::path::Path) -> String {
    let me = format!(
        "you are uid {} gid {}",
        nix::unistd::geteuid(),
        nix::unistd::getegid()
    );
    let mut parts = Vec::new();
    for p in [path.parent(), Some(path)].into_iter().flatten() {
        if let Ok(m) = std::fs::metadata(p) {
            parts.push(format!(
                "{} is owned by {}:{} mode {:04o}",
                p.display(),
                m.uid(),
                m.gid(),
                m.permissions().mode() & 0o7777
            ));
        }
    }
    format!("{}; {me}", parts.join(", "))
}

/// Hop 1: the listen address is free, or served by a bridge-guest.
async fn check_listen(addrs: &Addrs) -> Result<(), ExitCode> {
    match tokio::net::TcpListener::bind(addrs.listen).await {
        Ok(_) => {
            ok(&format!(
                "{} is free (start `bridge-guest` or `bridge-guest run -- AGENT` to serve it)",
                addrs.listen
            ));
            Ok(())
        }
        Err(_) => {
            let answer = async {
                let mut s = tokio::net::TcpStream::connect(addrs.listen).await?;
                exchange(&mut s, "GET", STATUS_PATH, None).await
            };
            match tokio::time::timeout(Duration::from_secs(10), answer).await {
                Ok(Ok((200, b))) if b.contains("\"bridge\":\"ollama-bridge\"") => {
                    ok(&format!("{} is served by bridge-guest", addrs.listen));
                    Ok(())
                }
                Ok(Ok((502, b))) if b.contains("cannot reach bridge-host") => {
                    ok(&format!(
                        "{} is served by bridge-guest (which cannot reach bridge-host yet)",
                        addrs.listen
                    ));
                    Ok(())
                }
                other => {
                    let seen = match other {
                        Ok(Ok((s, _))) => {
                            format!("it answers HTTP {s} without the bridge's status")
                        }
                        Ok(Err(e)) => format!("{e}"),
                        Err(_) => "it does not answer".into(),
                    };
                    Err(fail(
                        1,
                        &format!("{} is taken by something that is not bridge-guest: {seen}", addrs.listen),
                        "stop whatever listens there (a local Ollama? socat?), or serve another address with --listen",
                    ))
                }
            }
        }
    }
}

/// Runs the checks; exits non-zero at the first failure.
pub async fn run(addrs: &Addrs, model: Option<&str>) -> ExitCode {
    if let Err(code) = check_listen(addrs).await {
        return code;
    }
    if let ConnectAddr::Unix(p) = &addrs.connect {
        match std::fs::metadata(p) {
            Ok(_) => ok(&format!("socket {} exists", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return fail(3, &format!("socket {}: {e} ({})", p.display(), describe_access(p)),
                    "set socket_owner (uid:gid of this sandbox's user) or socket_mode for this sandbox in bridge-host's config");
            }
            Err(e) => {
                return fail(2, &format!("socket {}: {e}", p.display()),
                    "bind-mount bridge-host's socket DIRECTORY for this sandbox into the sandbox (not the socket file), and check --connect");
            }
        }
    }
    let status = match request(&addrs.connect, "GET", STATUS_PATH, None).await {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let who = match &addrs.connect {
                ConnectAddr::Unix(p) => describe_access(p),
                ConnectAddr::Vsock { .. } => String::new(),
            };
            return fail(3, &format!("connect to {}: {e} ({who})", addrs.connect),
                "set socket_owner (uid:gid of this sandbox's user) or socket_mode for this sandbox in bridge-host's config");
        }
        Err(e) => {
            return fail(4, &format!("connect to bridge-host at {}: {e}", addrs.connect),
                "start bridge-host on the host (systemctl start bridge-host, or bridge-host serve) with a listener for this sandbox");
        }
    };
    let doc: Value = match status {
        (200, body) => match serde_json::from_str::<Value>(&body) {
            Ok(v) if v["bridge"] == "ollama-bridge" => v,
            _ => {
                return fail(
                    5,
                    &format!(
                        "{} did not answer with the bridge's status: {}",
                        addrs.connect,
                        body.trim()
                    ),
                    "is this socket really bridge-host's? check --connect",
                )
            }
        },
        (s, body) => {
            return fail(
                5,
                &format!("bridge-host answered HTTP {s}: {}", body.trim()),
                "check bridge-host's log (journalctl -u bridge-host)",
            )
        }
    };
    let sandbox = doc["sandbox"].as_str().unwrap_or("?").to_owned();
    ok(&format!(
        "bridge-host {} answers at {} (sandbox \"{sandbox}\")",
        doc["version"].as_str().unwrap_or("?"),
        addrs.connect
    ));
    if doc["upstream"]["reachable"] != true {
        return fail(6, &format!("Ollama is not reachable from bridge-host: {}", doc["upstream"]["error"].as_str().unwrap_or("unknown error")),
            "start Ollama on the host (systemctl start ollama), or fix [upstream] url in bridge-host's config");
    }
    ok(&format!(
        "Ollama {} is reachable through bridge-host",
        doc["upstream"]["ollama_version"].as_str().unwrap_or("?")
    ));
    let Some(m) = model else {
        return ExitCode::SUCCESS;
    };
    let allowed: Vec<String> = doc["models"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let name = match ModelName::parse(m) {
        Ok(n) => n,
        Err(e) => {
            return fail(
                7,
                &format!("model {m:?}: {e}"),
                "use a model name as `ollama list` shows it",
            )
        }
    };
    let permitted = allowed
        .iter()
        .filter_map(|p| ModelPattern::parse(p).ok())
        .any(|p| p.matches(&name))
        && !name.is_cloud();
    if !permitted {
        return fail(
            7,
            &format!(
                "model {name} is not allowed for sandbox \"{sandbox}\" (allowed: {})",
                allowed.join(", ")
            ),
            "add it to this sandbox's `models` in bridge-host's config, or use an allowed model",
        );
    }
    ok(&format!(
        "model {name} is allowed for sandbox \"{sandbox}\""
    ));
    // An empty generate loads the model without producing text (done_reason "load").
    let body = format!(
        "{{\"model\":{},\"prompt\":\"\",\"stream\":false}}",
        serde_json::to_string(&name.to_string()).unwrap_or_default()
    );
    match request(&addrs.connect, "POST", "/api/generate", Some(&body)).await {
        Ok((200, _)) => {
            ok(&format!("model {name} loads"));
            ExitCode::SUCCESS
        }
        Ok((s, b)) => fail(
            8,
            &format!("model {name} does not load: HTTP {s}: {}", b.trim()),
            &format!("on the host: `ollama pull {name}`, and check Ollama's log"),
        ),
        Err(e) => fail(
            8,
            &format!("model {name}: {e}"),
            "retry; check bridge-host's and Ollama's logs",
        ),
    }
}
