//! The processes under test: bridge-host and bridge-guest (release binaries) and the
//! do-it-yourself socat pair; each in its own process group, killed on exit, on panic
//! and on Ctrl-C. Also what /proc says about them: resident memory and CPU time.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Process groups to kill when the bench ends, however it ends.
static GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Kills every process group started so far (idempotent).
pub fn kill_all() {
    let groups = std::mem::take(&mut *GROUPS.lock().unwrap_or_else(|p| p.into_inner()));
    for g in groups {
        let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
    }
}

/// Kills the children on panic (the release profile aborts, so no destructor runs) and
/// on SIGINT/SIGTERM.
pub fn install_cleanup() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        kill_all();
        prev(info);
    }));
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("signal runtime");
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        });
        kill_all();
        eprintln!("bench: interrupted; children killed");
        std::process::exit(130);
    });
}

/// Starts `cmd` in its own process group, registered for cleanup.
pub fn spawn(cmd: &mut Command) -> anyhow::Result<Child> {
    let child = cmd
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    GROUPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(child.id() as i32);
    Ok(child)
}

/// A started process.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// bridge-host's configuration: one sandbox that allows qwen2.5 models, with the
/// num_ctx pin on qwen2.5:7b, so every chat request is decided and rewritten.
/// `max_parallel` is the fair queue's size (`"off"`: none); the bench's `bridge` path
/// runs with a queue larger than any concurrency it uses, so it measures what the
/// queue costs when nothing waits.
pub fn host_config(dir: &Path, upstream: SocketAddr, max_parallel: &str) -> String {
    format!(
        r#"[upstream]
url = "http://{upstream}"
max_parallel = {max_parallel}

[audit]
path = "{dir}/audit.jsonl"

[[sandbox]]
name = "bench"
listen = "unix:{dir}/bench/ollama.sock"
models = ["qwen2.5:*"]

[model."qwen2.5:7b"]
num_ctx = 8192
"#,
        dir = dir.display()
    )
}

/// Starts bridge-host with `max_parallel` and waits for its ready line; returns it and
/// its socket.
pub fn start_host(
    bin: &Path,
    dir: &Path,
    upstream: SocketAddr,
    max_parallel: &str,
) -> anyhow::Result<(Proc, PathBuf)> {
    let host = start_host_cfg(bin, dir, &host_config(dir, upstream, max_parallel), 1)?;
    Ok((host, dir.join("bench/ollama.sock")))
}

/// Starts bridge-host with the configuration `cfg` (written to `dir/bridge.toml`) and
/// waits until its `listeners` listeners are ready.
pub fn start_host_cfg(bin: &Path, dir: &Path, cfg: &str, listeners: usize) -> anyhow::Result<Proc> {
    let path = dir.join("bridge.toml");
    std::fs::write(&path, cfg)?;
    let mut child = spawn(
        Command::new(bin)
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("host.stderr"))?),
    )?;
    let out = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(out).lines();
    let mut ready = 0;
    while ready < listeners {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("listening sandbox=") => ready += 1,
            Some(Ok(_)) => {}
            _ => bail!(
                "bridge-host exited before it was ready: {}",
                std::fs::read_to_string(dir.join("host.stderr")).unwrap_or_default()
            ),
        }
    }
    // Keep draining stdout so the daemon never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(Proc { child })
}

/// Starts bridge-guest on 127.0.0.1 port 0 and reads its address from the ready line.
pub fn start_guest(bin: &Path, socket: &Path, handoff: bool) -> anyhow::Result<(Proc, SocketAddr)> {
    let mut child = spawn(
        Command::new(bin)
            .args(["--handoff", if handoff { "on" } else { "off" }])
            .args(["--listen", "127.0.0.1:0", "--connect"])
            .arg(format!("unix:{}", socket.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )?;
    let out = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(out).lines();
    let line = lines
        .next()
        .context("bridge-guest exited before it was ready")??;
    let addr = line
        .strip_prefix("relaying ")
        .and_then(|r| r.split(" -> ").next())
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("unexpected ready line {line:?}"))?;
    std::thread::spawn(move || for _ in lines {});
    Ok((Proc { child }, addr))
}

/// The socat pair as people set it up: `TCP-LISTEN:P,fork → UNIX-CONNECT:S` in the
/// sandbox and `UNIX-LISTEN:S,fork → TCP:127.0.0.1:OLLAMA` on the host.
pub struct Socat {
    pub front: Proc,
    pub back: Proc,
    pub addr: SocketAddr,
}

/// Starts the socat pair; readiness is a successful connection, never a sleep.
/// socat cannot report a port 0: a free port is picked by binding and closing it, and
/// the start is retried if another process takes it in between. `tuned` adds what a
/// careful user would: `backlog=1024` on both listeners (socat's default is 5, so
/// concurrent connects overflow the accept queue: TCP clients wait for SYN retransmits,
/// unix clients may be refused) and `nodelay` on both TCP
/// sides (Nagle's algorithm otherwise delays the tail of large writes).
pub fn start_socat(dir: &Path, upstream: SocketAddr, tuned: bool) -> anyhow::Result<Socat> {
    let name = if tuned { "socat-tuned" } else { "socat" };
    let sock = dir.join(format!("{name}.sock"));
    let (listen_opts, connect_opts) = if tuned {
        (",backlog=1024", ",nodelay")
    } else {
        ("", "")
    };
    let back = spawn(
        Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork{listen_opts}", sock.display()))
            .arg(format!("TCP:{upstream}{connect_opts}"))
            .stdin(Stdio::null()),
    )
    .context("socat is needed: apt-get install -y socat")?;
    let mut back = Proc { child: back };
    wait_ready(&mut back, || UnixStream::connect(&sock).is_ok())?;
    let (front, addr) = socat_front(&sock, tuned)?;
    Ok(Socat { front, back, addr })
}

/// The sandbox half of the socat pair: `TCP-LISTEN` on a free loopback port, relaying to
/// the unix socket `sock`.
pub fn socat_front(sock: &Path, tuned: bool) -> anyhow::Result<(Proc, SocketAddr)> {
    let opts = if tuned { ",backlog=1024,nodelay" } else { "" };
    for _ in 0..20 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut front = Proc {
            child: spawn(
                Command::new("socat")
                    .arg(format!(
                        "TCP-LISTEN:{port},fork,reuseaddr,bind=127.0.0.1{opts}"
                    ))
                    .arg(format!("UNIX-CONNECT:{}", sock.display()))
                    .stdin(Stdio::null())
                    .stderr(Stdio::null()),
            )?,
        };
        if wait_ready(&mut front, || TcpStream::connect(addr).is_ok()).is_ok() {
            return Ok((front, addr));
        }
    }
    bail!("could not start socat on a free port in 20 tries")
}

/// Polls `ready` until it holds, failing if the process exits or 10 s pass.
fn wait_ready(p: &mut Proc, ready: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(st) = p.child.try_wait()? {
            bail!("exited before it was ready: {st}");
        }
        if ready() {
            // A port taken by someone else would also connect: make sure it is ours.
            if p.child.try_wait()?.is_none() {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    bail!("not ready within 10 s")
}

/// A `/proc/PID/status` field in KiB (e.g. `VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Proportional set size in KiB (shared pages split between the sharers).
pub fn pss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Fields of `/proc/PID/stat` after the command name (index 0 is the state).
fn stat_fields(pid: u32) -> Vec<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect()
}

fn ticks_per_sec() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |v| v as u64)
}

/// CPU seconds (user + system) of a process, all its threads, plus its children that
/// exited and were reaped (socat's per-connection children end up here).
pub fn cpu_secs(pid: u32) -> f64 {
    let f = stat_fields(pid);
    // utime, stime, cutime, cstime are fields 14..17 of stat: 11..14 after the state.
    let ticks: u64 = f.get(11..15).map_or(0, |s| s.iter().sum());
    ticks as f64 / ticks_per_sec() as f64
}

/// The live children of `pid` (zombies included, as they are not yet reaped).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&c| stat_fields(c).get(1) == Some(&(pid as u64)))
        .collect()
}

/// Waits (up to 10 s) until `pid` has reaped all its children, so that their CPU time
/// is in its `cutime`/`cstime`.
pub fn wait_children_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if children(pid).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
