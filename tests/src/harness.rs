//! Starts the real binaries for tests: bridge-host on temp-dir sockets, bridge-guest on
//! 127.0.0.1 port 0, each waited for by its ready line (never by sleeping).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::http::GUARD;

/// Directory holding the workspace's binaries (`target/<profile>`), or
/// `$OLLAMA_BRIDGE_BIN_DIR` when set (e.g. to test a static or release build).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("OLLAMA_BRIDGE_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    if deps.ends_with("deps") {
        deps.parent().expect("profile dir").to_owned()
    } else {
        deps.to_owned()
    }
}

/// The repository (the workspace root).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_owned()
}

/// Path of a workspace binary; panics with a hint when it was not built, or when it is
/// older than its sources ([`crate::fresh`]). A binary from `$OLLAMA_BRIDGE_BIN_DIR` is
/// tested as given: whoever names a directory chose what to test.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds every binary)",
        p.display()
    );
    if std::env::var_os("OLLAMA_BRIDGE_BIN_DIR").is_none() {
        let dirs: Vec<PathBuf> = crate::fresh::sources(name)
            .iter()
            .map(|d| repo().join(d))
            .collect();
        crate::fresh::refuse_stale(&p, &dirs);
    }
    p
}

/// The URL of a port on 127.0.0.1 on which nothing listens (bound, then closed): an
/// Ollama that is down.
pub fn dead_upstream() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    format!("http://{}", l.local_addr().expect("local addr"))
}

/// Runs `cmd` to its end (within the guard time) and parses its stdout as JSON; panics
/// with its stderr when it cannot start, fails or prints anything else. `what` names it
/// in those messages. Returns the value and the stderr.
pub async fn json_output(cmd: &mut Command, what: &str) -> (serde_json::Value, String) {
    let out = tokio::time::timeout(
        GUARD,
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{what} did not finish within the guard time"))
    .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {:?}\n{stderr}",
        out.status
    );
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what} printed {:?}: {e}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (v, stderr)
}

/// Fails the calling test unless it runs as root, saying why it needs root: a test that
/// cannot do its work fails rather than passes without testing anything. CI runs as root.
#[track_caller]
pub fn require_root(why: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root ({why}): run the tests as root, as CI does, \
         or leave it out with `--skip`"
    );
}

/// The bridge-guest binary: `$OLLAMA_BRIDGE_GUEST_BIN` when set (CI points it at the
/// static build; tested as given, like [`bin`] under `$OLLAMA_BRIDGE_BIN_DIR`), else the
/// workspace's, refused when stale.
pub fn guest_bin() -> PathBuf {
    match std::env::var_os("OLLAMA_BRIDGE_GUEST_BIN") {
        Some(p) => PathBuf::from(p),
        None => bin("bridge-guest"),
    }
}

/// How the guests the tests start reach bridge-host: `OLLAMA_BRIDGE_TEST_GUEST_MODE=relay`
/// forces the byte relay (CI runs the sandbox and client tests once more so); anything
/// else (the default) lets them hand connections over.
pub fn guest_relays() -> bool {
    std::env::var("OLLAMA_BRIDGE_TEST_GUEST_MODE").is_ok_and(|m| m == "relay")
}

/// The environment a test's bridge-guest runs with for [`guest_relays`]:
/// `OLLAMA_BRIDGE_HANDOFF=off` or `on` (a test that needs one mode passes `--handoff`).
pub fn guest_env() -> (&'static str, &'static str) {
    (
        "OLLAMA_BRIDGE_HANDOFF",
        if guest_relays() { "off" } else { "on" },
    )
}

/// A running bridge-host.
pub struct Host {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub audit: PathBuf,
    pub stderr: PathBuf,
    /// The `listening sandbox=... on ...` lines, in order.
    pub ready: Vec<String>,
    /// What the daemon prints on stdout after it was ready.
    later: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Started with [`KEEP_ROOT`] appended: `reconfigure` appends it too.
    keep_root: bool,
}

/// Appended to a test configuration without a `[privileges]` section.
///
/// The tests run as root, and `serve` started as root drops to an unprivileged user once
/// its sockets are open. Many tests rely on the daemon keeping root's powers afterwards
/// (reopening the audit log in a 0700 temp dir, adding listeners on reload, changing
/// `socket_owner`), so [`Host::start`] and [`Host::start_in`] keep it root with this
/// explicit opt-out unless the test configures `[privileges]` itself.
/// `tests/tests/integration/privileges.rs` covers the drop, and [`Host::start_exact`] starts a
/// configuration as written (the built-in default: drop to `ollama-bridge` or `nobody`).
pub const KEEP_ROOT: &str = "\n[privileges]\nrun_as_root = true\n";

fn keep_root(config: &str) -> String {
    if config.contains("[privileges]") {
        config.to_owned()
    } else {
        format!("{config}{KEEP_ROOT}")
    }
}

impl Host {
    /// Writes `config` (where `{dir}` is replaced by the temp dir) and starts
    /// `bridge-host serve --config`, waiting for one ready line per sandbox.
    /// Without a `[privileges]` section the daemon stays root (see [`KEEP_ROOT`]).
    pub async fn start(config: &str) -> Host {
        let dir = tempfile::tempdir().expect("tempdir");
        Host::start_in(dir, config, &[]).await
    }

    /// Like `start`, with extra arguments after `serve --config PATH`.
    pub async fn start_in(dir: tempfile::TempDir, config: &str, extra: &[&str]) -> Host {
        let mut host = Host::start_exact(dir, &keep_root(config), extra).await;
        host.keep_root = true;
        host
    }

    /// Like `start_in`, with the configuration exactly as given (no [`KEEP_ROOT`]).
    pub async fn start_exact(dir: tempfile::TempDir, config: &str, extra: &[&str]) -> Host {
        Host::start_wrapped(dir, config, &[], extra).await
    }

    /// Like `start_exact`, started as `WRAPPER... bridge-host serve ...` (e.g. under
    /// `setpriv` to start it as another user, with chosen capabilities).
    pub async fn start_wrapped(
        dir: tempfile::TempDir,
        config: &str,
        wrapper: &[&str],
        extra: &[&str],
    ) -> Host {
        let text = config.replace("{dir}", &dir.path().display().to_string());
        let cfg = dir.path().join("bridge.toml");
        std::fs::write(&cfg, &text).expect("write config");
        let mut args = vec!["--config".to_owned(), cfg.display().to_string()];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        Host::spawn(dir, &text, wrapper, &args, &[]).await
    }

    /// The quick start: `WRAPPER... bridge-host serve ARGS...` with no file (e.g.
    /// `--listen unix:{dir}/q.sock --upstream URL`, `{dir}` replaced by the temp dir) and
    /// these extra environment variables. Its audit log is `host.audit` only if a test sets
    /// it to where the built-in defaults put it.
    pub async fn start_quick(
        dir: tempfile::TempDir,
        wrapper: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Host {
        let d = dir.path().display().to_string();
        let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", &d)).collect();
        Host::spawn(dir, "", wrapper, &args, env).await
    }

    /// Starts `WRAPPER... bridge-host serve ARGS...` and waits for one ready line per
    /// sandbox of `text` (the configuration, empty for the quick start).
    async fn spawn(
        dir: tempfile::TempDir,
        text: &str,
        wrapper: &[&str],
        args: &[String],
        env: &[(&str, &str)],
    ) -> Host {
        let cfg = dir.path().join("bridge.toml");
        let expected = text.matches("[[sandbox]]").count().max(1);
        let stderr = dir.path().join("host.stderr");
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin("bridge-host"));
                c
            }
            None => Command::new(bin("bridge-host")),
        };
        let mut child = cmd
            .arg("serve")
            .args(args)
            .envs(env.iter().copied())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn bridge-host");
        let out = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(out).lines();
        let mut ready = Vec::new();
        while ready.len() < expected {
            let line = tokio::time::timeout(GUARD, lines.next_line())
                .await
                .expect("bridge-host ready within the guard time")
                .expect("read stdout");
            match line {
                Some(l) if l.starts_with("listening sandbox=") => ready.push(l),
                Some(_) => {}
                None => panic!(
                    "bridge-host exited before it was ready: {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                ),
            }
        }
        let (tx, later) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx.send(l);
            }
        });
        let audit = text
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("path = \"")
                    .map(|p| PathBuf::from(p.trim_end_matches('"')))
            })
            .unwrap_or_else(|| dir.path().join("audit.jsonl"));
        Host {
            child,
            dir,
            config: cfg,
            audit,
            stderr,
            ready,
            later,
            keep_root: false,
        }
    }

    /// Waits for the next stdout line starting with `prefix` (earlier ones are skipped).
    pub async fn wait_line(&mut self, prefix: &str) -> String {
        let find = async {
            while let Some(l) = self.later.recv().await {
                if l.starts_with(prefix) {
                    return l;
                }
            }
            panic!("bridge-host closed stdout before printing {prefix:?}");
        };
        tokio::time::timeout(GUARD, find)
            .await
            .unwrap_or_else(|_| panic!("no {prefix:?} line within the guard time"))
    }

    /// Replaces the configuration file (`{dir}` expanded) and sends SIGHUP.
    /// (With [`KEEP_ROOT`] appended when the host was started with it.)
    pub fn reconfigure(&self, config: &str) {
        let config = if self.keep_root {
            keep_root(config)
        } else {
            config.to_owned()
        };
        let text = config.replace("{dir}", &self.dir.path().display().to_string());
        std::fs::write(&self.config, text).expect("write config");
        self.signal(nix::sys::signal::Signal::SIGHUP);
    }

    /// A path inside the host's temp dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The audit records written so far.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("torn audit line {l:?}: {e}"))
            })
            .collect()
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().expect("running") as i32);
        nix::sys::signal::kill(pid, sig).expect("kill");
    }

    /// The daemon's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits (within the guard time) for a line of the daemon's stderr containing
    /// `needle`, and returns it. The log is a file: it is re-read as it grows.
    pub async fn wait_log(&self, needle: &str) -> String {
        let find = async {
            loop {
                if let Some(l) = self.log().lines().find(|l| l.contains(needle)) {
                    return l.to_owned();
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(GUARD, find).await.unwrap_or_else(|_| {
            panic!(
                "no log line with {needle:?} within the guard time: {}",
                self.log()
            )
        })
    }
}

/// The Python that runs the real clients (tests/clients/*.py), as a path usable inside
/// the sandbox: `$OLLAMA_BRIDGE_PYTHON`, else the venv `scripts/test` makes in
/// tests/clients/.venv, else the interpreter behind `python3` (pyenv shims need not work
/// inside the sandbox). A missing client module fails its test with the install command.
pub fn python() -> String {
    if let Some(p) = std::env::var_os("OLLAMA_BRIDGE_PYTHON") {
        return p.to_string_lossy().into_owned();
    }
    let venv = repo().join("tests/clients/.venv/bin/python3");
    if venv.exists() {
        return venv.to_string_lossy().into_owned();
    }
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): run the tests with ./scripts/test, which installs what they need")
        });
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A copy of `src` that any user may read and run (mode 0755, in a 0755 temp dir), for
/// tests that run it as another user: the repository and `target/` may sit in a private
/// directory (a `mktemp -d` clone is 0700). Keep the returned dir alive while it runs.
pub fn copy_for_others(src: &Path) -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dst = dir.path().join(src.file_name().expect("a file name"));
    std::fs::copy(src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, dst)
}

/// A process's peak resident set (VmHWM) in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kb * 1024
}

/// A config with one sandbox `name` listening on `{dir}/<name>/ollama.sock`.
pub fn config(upstream: &str, sandboxes: &[(&str, &str)], extra: &str) -> String {
    let mut s = format!(
        "[upstream]\nurl = \"{upstream}\"\nconnect_timeout = \"2s\"\nheader_timeout = \"30s\"\nidle_timeout = \"30s\"\n\n[audit]\npath = \"{{dir}}/audit.jsonl\"\n\n"
    );
    for (name, body) in sandboxes {
        s.push_str(&format!(
            "[[sandbox]]\nname = \"{name}\"\nlisten = \"unix:{{dir}}/{name}/ollama.sock\"\n{body}\n\n"
        ));
    }
    s.push_str(extra);
    s
}

/// The socket of sandbox `name` under a host started with [`config`].
pub fn socket(host: &Host, name: &str) -> PathBuf {
    host.path(&format!("{name}/ollama.sock"))
}

/// A running bridge-guest.
pub struct Guest {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Guest {
    /// Starts `bridge-guest --listen 127.0.0.1:0 --connect unix:SOCKET`.
    pub async fn start(socket: &Path) -> Guest {
        Guest::start_with(&["--connect", &format!("unix:{}", socket.display())]).await
    }

    /// Starts `bridge-guest --listen 127.0.0.1:0 ARGS...`.
    pub async fn start_with(args: &[&str]) -> Guest {
        Guest::start_wrapped(&[], args).await
    }

    /// Starts `WRAPPER... bridge-guest --listen 127.0.0.1:0 ARGS...`, e.g. under
    /// `setpriv` to run it as another user.
    pub async fn start_wrapped(wrapper: &[&str], args: &[&str]) -> Guest {
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(guest_bin());
                c
            }
            None => Command::new(guest_bin()),
        };
        let (k, v) = guest_env();
        let mut child = cmd
            .env(k, v)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn bridge-guest");
        let out = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(out).lines();
        let line = tokio::time::timeout(GUARD, lines.next_line())
            .await
            .expect("guest ready within the guard time")
            .expect("read stdout")
            .expect("guest printed its ready line");
        let addr = line
            .strip_prefix("relaying ")
            .and_then(|r| r.split(" -> ").next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
        Guest { child, addr }
    }
}
