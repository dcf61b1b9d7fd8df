//! The privileged monitor's loop: a process forked before the runtime and any thread
//! start, which stays root with the few capabilities a listener needs and does only
//! what [`Request`] lists: re-read and validate the configuration file, open a sandbox's
//! listener as that file says (directory, stale socket, mode, owner) and pass it over,
//! set a kept socket's mode and owner, remove a removed sandbox's stale socket. It opens
//! nothing else, speaks to no network, holds a listener only until it is sent, and exits
//! when the daemon's end of the socket closes or the daemon dies.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::unistd::Pid;
use protocol::config::{Config, DefaultsEnv, Sandbox};

use super::wire::{self, Envelope, Reply, Request, MAX_REQUEST};
use crate::net::listen::{apply_perms, remove_stale, Bound};
use crate::os::fdpass;

/// What the monitor knows.
struct Monitor {
    sock: OwnedFd,
    /// The configuration file: the only file it reads.
    path: PathBuf,
    /// The environment the daemon's defaults were resolved in at start.
    env: DefaultsEnv,
    /// The configuration last read, whose sandboxes it opens.
    last: Option<Config>,
    /// Every unix socket path of every configuration it has seen: the only paths it
    /// removes.
    known: HashSet<PathBuf>,
}

/// The forked child's whole life: confine, serve the daemon's requests, exit.
pub fn run(sock: OwnedFd, parent: Pid, path: PathBuf, env: DefaultsEnv, started: &Config) -> ! {
    let span = tracing::info_span!("monitor", pid = std::process::id());
    let _entered = span.enter();
    if let Err(e) = crate::os::privileges::confine_monitor(parent, sock.as_raw_fd()) {
        tracing::error!(error = %e, "the privileged monitor cannot confine itself; it exits (the daemon stops with it)");
        std::process::exit(1);
    }
    // Confined: the daemon, waiting in `spawn`, may go on.
    let hello = wire::encode(0, Reply::Done).expect("a reply encodes");
    if let Err(e) = fdpass::send(sock.as_fd(), &hello, &[]) {
        tracing::error!(error = %e, "the privileged monitor cannot reach the daemon; it exits");
        std::process::exit(1);
    }
    let mut m = Monitor {
        sock,
        path,
        env,
        last: None,
        known: unix_paths(started).collect(),
    };
    let code = match m.serve() {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "the privileged monitor stops; reloads are no longer possible and the daemon stops too");
            1
        }
    };
    std::process::exit(code)
}

fn unix_paths(c: &Config) -> impl Iterator<Item = PathBuf> + '_ {
    c.sandboxes
        .iter()
        .filter_map(|s| s.listen.unix_path().map(Path::to_owned))
}

impl Monitor {
    /// Answers requests until the daemon closes its end (`Ok`) or breaks the protocol.
    fn serve(&mut self) -> io::Result<()> {
        loop {
            let bytes = match fdpass::recv(self.sock.as_fd(), MAX_REQUEST, false) {
                Ok((bytes, _)) => bytes,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            };
            let Envelope { id, body } = wire::decode::<Request>(&bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let (reply, fd) = self.handle(body);
            let bytes = wire::encode(id, reply)?;
            let fds: Vec<_> = fd.iter().map(AsFd::as_fd).collect();
            fdpass::send(self.sock.as_fd(), &bytes, &fds)?;
            // `fd`, a listener, is closed here: the daemon has its copy.
        }
    }

    fn handle(&mut self, req: Request) -> (Reply, Option<OwnedFd>) {
        match req {
            Request::Read => (self.read(), None),
            Request::Bind { sandbox } => match self.sandbox(&sandbox) {
                Ok(sb) => match Bound::bind(&sb.listen, sb.socket_mode, sb.socket_owner) {
                    Ok(b) => {
                        tracing::info!(sandbox = %sandbox, listen = %sb.listen, "opened the listener for the daemon");
                        (Reply::Done, Some(b.into_fd()))
                    }
                    Err(e) => (failed(e), None),
                },
                Err(r) => (r, None),
            },
            Request::Perms { sandbox } => match self.sandbox(&sandbox) {
                Ok(sb) => match sb.listen.unix_path() {
                    Some(p) => match apply_perms(p, sb.socket_mode, sb.socket_owner) {
                        Ok(()) => (Reply::Done, None),
                        Err(e) => (failed(e), None),
                    },
                    None => (Reply::Done, None),
                },
                Err(r) => (r, None),
            },
            Request::Unlink { path } => (self.unlink(&path), None),
        }
    }

    /// Re-reads and validates the configuration file.
    fn read(&mut self) -> Reply {
        let shown = self.path.display();
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                return Reply::Unreadable {
                    error: format!("cannot read {shown}: {e}"),
                }
            }
        };
        match Config::parse(&text, &self.env) {
            Ok(c) => {
                tracing::info!(file = %shown, sandboxes = c.sandboxes.len(), "re-read the configuration for the daemon");
                self.known.extend(unix_paths(&c));
                self.last = Some(c);
                Reply::Config { text }
            }
            Err(errs) => Reply::Invalid {
                errors: errs
                    .0
                    .iter()
                    .map(|e| match e.line {
                        Some(l) => format!("{shown}:{l}: {}", e.message),
                        None => format!("{shown}: {}", e.message),
                    })
                    .collect(),
            },
        }
    }

    fn sandbox(&self, name: &str) -> Result<Sandbox, Reply> {
        let Some(c) = &self.last else {
            return Err(Reply::Failed {
                error: "no configuration was read yet".into(),
            });
        };
        c.sandboxes
            .iter()
            .find(|s| s.name.as_str() == name)
            .cloned()
            .ok_or_else(|| Reply::Failed {
                error: format!("no sandbox {name:?} in {}", self.path.display()),
            })
    }

    fn unlink(&self, path: &Path) -> Reply {
        if !self.known.contains(path) {
            return Reply::Failed {
                error: format!(
                    "{} is no sandbox's socket in {}",
                    path.display(),
                    self.path.display()
                ),
            };
        }
        if std::fs::symlink_metadata(path).is_err() {
            return Reply::Done; // already gone (the daemon removed it)
        }
        match remove_stale(path) {
            Ok(()) => Reply::Done,
            Err(e) => failed(e),
        }
    }
}

fn failed(e: impl std::fmt::Display) -> Reply {
    Reply::Failed {
        error: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn env() -> DefaultsEnv {
        DefaultsEnv {
            is_root: false,
            xdg_runtime_dir: Some("/run/user/1000".into()),
            xdg_state_home: None,
            home: Some("/home/u".into()),
            uid: 1000,
        }
    }

    fn sandbox(dir: &Path, name: &str) -> String {
        format!(
            "[[sandbox]]\nname = \"{name}\"\nlisten = \"unix:{}/{name}/ollama.sock\"\n",
            dir.display()
        )
    }

    fn monitor(dir: &Path, text: &str) -> Monitor {
        let path = dir.join("bridge.toml");
        std::fs::write(&path, text).unwrap();
        let started = Config::parse(text, &env()).unwrap();
        Monitor {
            sock: fdpass::pair().unwrap().0,
            path,
            env: env(),
            last: None,
            known: unix_paths(&started).collect(),
        }
    }

    #[test]
    fn it_binds_only_sandboxes_of_the_file_it_read() {
        let t = tempfile::tempdir().unwrap();
        let mut m = monitor(t.path(), &sandbox(t.path(), "a"));
        let bind = |m: &mut Monitor, name: &str| {
            m.handle(Request::Bind {
                sandbox: name.into(),
            })
        };
        // Nothing before a read: the daemon cannot name sandboxes of its own.
        assert!(matches!(bind(&mut m, "a"), (Reply::Failed { .. }, None)));
        std::fs::write(
            &m.path,
            [sandbox(t.path(), "a"), sandbox(t.path(), "b")].concat(),
        )
        .unwrap();
        assert!(matches!(
            m.handle(Request::Read),
            (Reply::Config { .. }, None)
        ));
        let (reply, fd) = bind(&mut m, "b");
        assert_eq!(reply, Reply::Done);
        assert!(fd.is_some(), "the listener comes with the reply");
        let sock = t.path().join("b/ollama.sock");
        assert!(std::fs::symlink_metadata(&sock)
            .unwrap()
            .file_type()
            .is_socket());
        let (reply, fd) = bind(&mut m, "c");
        assert!(matches!(reply, Reply::Failed { error } if error.contains("no sandbox \"c\"")));
        assert!(fd.is_none());
        // A live socket is not replaced, and the error says so.
        let (reply, _) = bind(&mut m, "b");
        assert!(
            matches!(reply, Reply::Failed { error } if error.contains("another process is listening"))
        );
    }

    #[test]
    fn a_bad_file_is_reported_line_by_line_and_changes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let mut m = monitor(t.path(), &sandbox(t.path(), "a"));
        assert!(matches!(
            m.handle(Request::Read),
            (Reply::Config { .. }, None)
        ));
        std::fs::write(&m.path, sandbox(t.path(), "a") + "bogus_key = 1\n").unwrap();
        match m.handle(Request::Read).0 {
            Reply::Invalid { errors } => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert!(errors[0].contains("bridge.toml:4:"), "{errors:?}");
            }
            other => panic!("{other:?}"),
        }
        assert!(m.last.is_some(), "the last good file stays");
        std::fs::remove_file(&m.path).unwrap();
        assert!(
            matches!(m.handle(Request::Read).0, Reply::Unreadable { error } if error.contains("cannot read"))
        );
    }

    #[test]
    fn it_removes_only_stale_sockets_of_a_configuration() {
        let t = tempfile::tempdir().unwrap();
        let m = monitor(t.path(), &sandbox(t.path(), "a"));
        let stale = t.path().join("a/ollama.sock");
        std::fs::create_dir(t.path().join("a")).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let other = t.path().join("host-file");
        std::fs::write(&other, "keep").unwrap();
        let unlink = |p: &Path| m.unlink(p);
        assert!(
            matches!(unlink(&other), Reply::Failed { error } if error.contains("no sandbox's socket"))
        );
        assert!(other.exists());
        assert_eq!(unlink(&stale), Reply::Done);
        assert!(!stale.exists());
        assert_eq!(unlink(&stale), Reply::Done, "already gone");
    }
}
