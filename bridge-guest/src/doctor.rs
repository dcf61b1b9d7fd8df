//! `bridge-guest doctor`: checks each hop from inside the sandbox, in order, and stops at
//! the first broken one with what to do about it. Exit codes name the hop:
//! 1 listen address taken by something else, 2 no socket, 3 socket not accessible,
//! 4 bridge-host not running, 5 bridge-host answers wrongly, 6 Ollama unreachable,
//! 7 model not allowed, 8 model does not load.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::ExitCode;
use std::time::Duration;

use protocol::listen::ConnectAddr;
use protocol::route::STATUS_PATH;
use protocol::{ModelName, ModelPattern};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::addrs::Addrs;

/// `doctor --help`'s exit-code table: the first broken hop names the code.
pub const EXIT_CODES: &str = "\
Exit codes (the first broken hop):
  0  every hop works
  1  the listen address is taken by something that is not bridge-guest
  2  no socket at --connect (the directory is not bind-mounted)
  3  the socket is not accessible to this user (owner and mode are shown),
     or a directory above it cannot be passed (which one is shown)
  4  nobody listens on the socket (bridge-host is not running)
  5  the socket answers, but not with the bridge's status
  6  bridge-host cannot reach Ollama
  7  --model is not allowed for this sandbox
  8  --model does not load (e.g. not pulled on the host)";

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

/// The first directory above `path` that this user cannot search (pass through), from
/// the root down: the one that hides the socket although it may exist.
fn unpassable_dir(path: &std::path::Path) -> Option<std::path::PathBuf> {
    use nix::unistd::{faccessat, AccessFlags};
    let mut dirs: Vec<&std::path::Path> = path.ancestors().skip(1).collect();
    dirs.reverse();
    dirs.into_iter()
        .filter(|d| !d.as_os_str().is_empty())
        .find(|d| {
            faccessat(None, *d, AccessFlags::X_OK, nix::fcntl::AtFlags::AT_EACCESS)
                == Err(nix::errno::Errno::EACCES)
        })
        .map(|d| d.to_owned())
}

/// `owned by UID:GID mode MODE` of a path, or why it cannot be said.
fn owner_mode(p: &std::path::Path) -> String {
    match std::fs::metadata(p) {
        Ok(m) => format!(
            "owned by {}:{} mode {:04o}",
            m.uid(),
            m.gid(),
            m.permissions().mode() & 0o7777
        ),
        Err(e) => e.to_string(),
    }
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
async fn check_listen(addrs: &Addrs) -> Hop<()> {
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

/// The outcome of one hop: `Err` carries the exit code of the first broken hop.
type Hop<T> = Result<T, ExitCode>;

/// Runs the checks; exits non-zero at the first failure.
pub async fn run(addrs: &Addrs, model: Option<&str>) -> ExitCode {
    match run_hops(addrs, model).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// Every hop, in order, stopping at the first broken one.
async fn run_hops(addrs: &Addrs, model: Option<&str>) -> Hop<()> {
    check_listen(addrs).await?;
    check_socket(&addrs.connect)?;
    let status = connect_bridge(&addrs.connect).await?;
    let doc = check_bridge_status(&addrs.connect, status)?;
    report_handoff(addrs).await;
    check_ollama(&doc)?;
    let Some(m) = model else {
        return Ok(());
    };
    let name = check_model_allowed(&doc, m)?;
    check_model_loads(&addrs.connect, &name).await
}

/// Whether bridge-host takes connections handed over (never a broken hop: the relay
/// works without it).
async fn report_handoff(addrs: &Addrs) {
    use crate::handoff::{negotiate, Outcome};
    let Some(path) = addrs.handoff_socket() else {
        let why = if matches!(addrs.connect, ConnectAddr::Unix(_)) {
            "switched off"
        } else {
            "vsock"
        };
        println!("info  hand-off not asked for ({why}): relaying");
        return;
    };
    match negotiate(path).await {
        o @ Outcome::Agreed(_) => ok(&o.describe()),
        o => println!("info  {}", o.describe()),
    }
}

/// The sandbox bridge-host says this socket belongs to.
fn sandbox_of(doc: &Value) -> &str {
    doc["sandbox"].as_str().unwrap_or("?")
}

/// Hop 2: the unix socket exists and may be looked at (vsock has nothing to look at).
fn check_socket(connect: &ConnectAddr) -> Hop<()> {
    let ConnectAddr::Unix(p) = connect else {
        return Ok(());
    };
    match std::fs::metadata(p) {
        Ok(_) => {
            ok(&format!("socket {} exists", p.display()));
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => match unpassable_dir(p) {
            Some(dir) => Err(fail(
                3,
                &format!(
                    "socket {} may exist, but uid {} cannot reach it: {} is not searchable by it ({})",
                    p.display(),
                    nix::unistd::geteuid(),
                    dir.display(),
                    owner_mode(&dir)
                ),
                &if Some(dir.as_path()) == p.parent() {
                    // The socket's own directory: bridge-host made it 0750 for socket_owner.
                    "set socket_owner (uid:gid of this sandbox's user) for this sandbox in bridge-host's config: \
bridge-host hands the socket's directory to it"
                        .to_owned()
                } else {
                    format!(
                        "on the host, make {d} passable for this user (chmod o+x {d}, e.g. mode 0711; \
bridge-host creates missing parents so), or bind-mount the socket's directory where this user can reach it",
                        d = dir.display()
                    )
                },
            )),
            None => Err(fail(3, &format!("socket {}: {e} ({})", p.display(), describe_access(p)),
                "set socket_owner (uid:gid of this sandbox's user) or socket_mode for this sandbox in bridge-host's config")),
        },
        Err(e) => {
            Err(fail(2, &format!("socket {}: {e}", p.display()),
                "bind-mount bridge-host's socket DIRECTORY for this sandbox into the sandbox (not the socket file), and check --connect"))
        }
    }
}

/// Hop 3: bridge-host accepts a connection; returns its answer to the status request.
async fn connect_bridge(connect: &ConnectAddr) -> Hop<(u16, String)> {
    match request(connect, "GET", STATUS_PATH, None).await {
        Ok(r) => Ok(r),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let who = match connect {
                ConnectAddr::Unix(p) => describe_access(p),
                ConnectAddr::Vsock { .. } => String::new(),
            };
            Err(fail(3, &format!("connect to {connect}: {e} ({who})"),
                "set socket_owner (uid:gid of this sandbox's user) or socket_mode for this sandbox in bridge-host's config"))
        }
        Err(e) => {
            Err(fail(4, &format!("connect to bridge-host at {connect}: {e}"),
                "start bridge-host on the host (systemctl start bridge-host, or bridge-host serve) with a listener for this sandbox"))
        }
    }
}

/// Hop 4: the answer is bridge-host's status document; returns it.
fn check_bridge_status(connect: &ConnectAddr, status: (u16, String)) -> Hop<Value> {
    let doc: Value = match status {
        (200, body) => match serde_json::from_str::<Value>(&body) {
            Ok(v) if v["bridge"] == "ollama-bridge" => v,
            _ => {
                return Err(fail(
                    5,
                    &format!(
                        "{} did not answer with the bridge's status: {}",
                        connect,
                        body.trim()
                    ),
                    "is this socket really bridge-host's? check --connect",
                ))
            }
        },
        (s, body) => {
            return Err(fail(
                5,
                &format!("bridge-host answered HTTP {s}: {}", body.trim()),
                "check bridge-host's log (journalctl -u bridge-host)",
            ))
        }
    };
    ok(&format!(
        "bridge-host {} answers at {} (sandbox \"{}\")",
        doc["version"].as_str().unwrap_or("?"),
        connect,
        sandbox_of(&doc)
    ));
    Ok(doc)
}

/// Hop 5: bridge-host reaches Ollama.
fn check_ollama(doc: &Value) -> Hop<()> {
    if doc["upstream"]["reachable"] != true {
        return Err(fail(6, &format!("Ollama is not reachable from bridge-host: {}", doc["upstream"]["error"].as_str().unwrap_or("unknown error")),
            "start Ollama on the host (systemctl start ollama), or fix [upstream] url in bridge-host's config"));
    }
    ok(&format!(
        "Ollama {} is reachable through bridge-host",
        doc["upstream"]["ollama_version"].as_str().unwrap_or("?")
    ));
    Ok(())
}

/// Hop 6 (with `--model`): the model is allowed for this sandbox; returns its name.
fn check_model_allowed(doc: &Value, m: &str) -> Hop<ModelName> {
    let sandbox = sandbox_of(doc);
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
            return Err(fail(
                7,
                &format!("model {m:?}: {e}"),
                "use a model name as `ollama list` shows it",
            ))
        }
    };
    let permitted = allowed
        .iter()
        .filter_map(|p| ModelPattern::parse(p).ok())
        .any(|p| p.matches(&name))
        && !name.is_cloud();
    if !permitted {
        return Err(fail(
            7,
            &format!(
                "model {name} is not allowed for sandbox \"{sandbox}\" (allowed: {})",
                allowed.join(", ")
            ),
            "add it to this sandbox's `models` in bridge-host's config, or use an allowed model",
        ));
    }
    ok(&format!(
        "model {name} is allowed for sandbox \"{sandbox}\""
    ));
    Ok(name)
}

/// Hop 7 (with `--model`): the model loads.
async fn check_model_loads(connect: &ConnectAddr, name: &ModelName) -> Hop<()> {
    // An empty generate loads the model without producing text (done_reason "load").
    let body = format!(
        "{{\"model\":{},\"prompt\":\"\",\"stream\":false}}",
        serde_json::to_string(&name.to_string()).unwrap_or_default()
    );
    match request(connect, "POST", "/api/generate", Some(&body)).await {
        Ok((200, _)) => {
            ok(&format!("model {name} loads"));
            Ok(())
        }
        Ok((s, b)) => Err(fail(
            8,
            &format!("model {name} does not load: HTTP {s}: {}", b.trim()),
            &format!("on the host: `ollama pull {name}`, and check Ollama's log"),
        )),
        Err(e) => Err(fail(
            8,
            &format!("model {name}: {e}"),
            "retry; check bridge-host's and Ollama's logs",
        )),
    }
}
