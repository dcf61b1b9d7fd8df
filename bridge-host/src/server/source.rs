//! Where a reload gets its configuration and its new listeners: the daemon itself (it
//! reads the file and binds: started without root, or as root with `run_as_root`), or
//! its privileged monitor (started as root: the daemon dropped every privilege). Every
//! failure comes back as a [`Failure`]: what did not happen, why, and what to do.

use std::path::{Path, PathBuf};

use protocol::config::{Config, DefaultsEnv, Sandbox};
use protocol::ListenAddr;

use super::monitor::{Client, MonitorError};
use super::reload::Failure;
use crate::net::listen::{apply_perms, Listener};

/// The daemon's way to reload.
#[derive(Debug)]
pub enum Source {
    /// The daemon reads the file and binds itself.
    Local { path: PathBuf, env: DefaultsEnv },
    /// The privileged monitor reads the file and binds.
    Monitor {
        client: Client,
        path: PathBuf,
        env: DefaultsEnv,
    },
}

/// What a daemon with no monitor can do, once it has given up the capabilities it was
/// started with (`who`: whom it runs as); `None` when it never had any to give up.
fn limits() -> Option<String> {
    crate::os::privileges::dropped_to().map(|who| {
        format!(
            "this daemon runs as {who} with no privileged monitor (it was not started as root, e.g. systemd User=), \
so a reload reads only files that user may read, opens sockets only where it may write, and cannot set socket_owner; \
for anything else restart the daemon (systemctl restart bridge-host), or start it as root so that a privileged monitor does reloads"
        )
    })
}

const RETRY: &str = "correct it, then send SIGHUP again";

impl Source {
    /// The daemon reloads `path` itself (resolving defaults in `env`, as at start).
    pub fn local(path: PathBuf, env: DefaultsEnv) -> Source {
        Source::Local { path, env }
    }

    /// The privileged monitor reloads `path` (resolving defaults in `env`, as at start).
    pub fn monitor(client: Client, path: PathBuf, env: DefaultsEnv) -> Source {
        Source::Monitor { client, path, env }
    }

    /// The configuration file.
    pub fn path(&self) -> &Path {
        match self {
            Source::Local { path, .. } | Source::Monitor { path, .. } => path,
        }
    }

    /// Says, once the daemon is ready, what a reload can do in this layout.
    pub fn announce(&self) {
        match self {
            Source::Monitor { client, .. } => tracing::info!(
                monitor_pid = client.pid().as_raw(),
                "reload (SIGHUP): the privileged monitor re-reads {} and opens added listeners; this process holds no privilege",
                self.path().display()
            ),
            Source::Local { .. } => {
                if let Some(l) = limits() {
                    tracing::warn!("reload (SIGHUP): {l}");
                }
            }
        }
    }

    /// The new configuration, read and validated.
    pub async fn config(&mut self) -> Result<Config, Failure> {
        let (text, env) = match self {
            Source::Local { path, env } => match std::fs::read_to_string(&*path) {
                Ok(t) => (t, &*env),
                Err(e) => {
                    let fix = match limits() {
                        Some(l) => format!("{l}; or make {} readable by that user", path.display()),
                        None => format!("make {} readable, then send SIGHUP again", path.display()),
                    };
                    return Err(Failure {
                        what: format!("{} was not read", path.display()),
                        cause: format!("cannot read {}: {e}", path.display()),
                        fix,
                    });
                }
            },
            Source::Monitor { client, path, env } => match client.read_config().await {
                Ok(t) => (t, &*env),
                Err(MonitorError::Invalid(errors)) => return Err(invalid(path, errors)),
                Err(MonitorError::Unreadable(cause)) => {
                    return Err(Failure {
                        what: format!("{} was not read", path.display()),
                        cause,
                        fix: format!("the monitor reads it as root: check that {} exists, then send SIGHUP again", path.display()),
                    })
                }
                Err(e) => return Err(monitor_failure(format!("{} was not read", path.display()), e)),
            },
        };
        let parsed = Config::parse(&text, env);
        if let Ok(c) = &parsed {
            for w in &c.warnings {
                let at = w.line.map_or(String::new(), |l| format!(":{l}"));
                tracing::warn!("{}{at}: {}", self.path().display(), w.message);
            }
        }
        parsed.map_err(|errs| {
            let path = self.path();
            invalid(
                path,
                errs.0
                    .iter()
                    .map(|e| match e.line {
                        Some(l) => format!("{}:{l}: {}", path.display(), e.message),
                        None => format!("{}: {}", path.display(), e.message),
                    })
                    .collect(),
            )
        })
    }

    /// The listener of an added sandbox.
    pub async fn listener(&mut self, sb: &Sandbox) -> Result<Listener, Failure> {
        let what = format!("sandbox \"{}\" was not opened", sb.name);
        let fd = match self {
            Source::Local { .. } => {
                return Listener::bind(&sb.listen, sb.socket_mode, sb.socket_owner).map_err(|e| {
                    Failure {
                        what,
                        cause: e.to_string(),
                        fix: limits().unwrap_or_else(|| RETRY.into()),
                    }
                })
            }
            Source::Monitor { client, .. } => client.bind(sb.name.as_str()).await,
        };
        match fd {
            Ok(fd) => Listener::adopt(&sb.listen, fd).map_err(|e| Failure {
                what,
                cause: e.to_string(),
                fix: RETRY.into(),
            }),
            Err(MonitorError::Failed(cause)) => Err(Failure {
                what,
                cause,
                fix: format!("the monitor runs as root: {RETRY}"),
            }),
            Err(e) => Err(monitor_failure(what, e)),
        }
    }

    /// Applies a kept sandbox's new socket mode and owner.
    pub async fn perms(&mut self, sb: &Sandbox) -> Result<(), Failure> {
        let what = format!(
            "the socket mode/owner of sandbox \"{}\" was not changed",
            sb.name
        );
        match self {
            Source::Local { .. } => match sb.listen.unix_path() {
                Some(p) => apply_perms(p, sb.socket_mode, sb.socket_owner).map_err(|e| Failure {
                    what,
                    cause: e.to_string(),
                    fix: limits().unwrap_or_else(|| RETRY.into()),
                }),
                None => Ok(()),
            },
            Source::Monitor { client, .. } => match client.perms(sb.name.as_str()).await {
                Ok(()) => Ok(()),
                Err(MonitorError::Failed(cause)) => Err(Failure {
                    what,
                    cause,
                    fix: format!("the monitor runs as root: {RETRY}"),
                }),
                Err(e) => Err(monitor_failure(what, e)),
            },
        }
    }

    /// After a removed sandbox's listener stopped: its socket, which the daemon could
    /// not remove without privileges, is removed by the monitor. A socket left behind
    /// only refuses connections (the next bind replaces it), so this just logs.
    pub async fn release(&mut self, addr: &ListenAddr) {
        // (The daemon may not even see whether it is still there: the monitor checks.)
        let (Source::Monitor { client, .. }, Some(path)) = (self, addr.unix_path()) else {
            return;
        };
        if let Err(e) = client.unlink(path).await {
            tracing::warn!(path = %path.display(), error = %e, "the removed sandbox's socket stays (it refuses connections; the next bind replaces it)");
        }
    }

    /// Resolves when reloading has become impossible (the monitor is gone); never for a
    /// daemon that reloads by itself.
    pub async fn gone(&self) -> MonitorError {
        match self {
            Source::Monitor { client, .. } => client.gone().await,
            Source::Local { .. } => std::future::pending().await,
        }
    }
}

fn invalid(path: &Path, errors: Vec<String>) -> Failure {
    for e in &errors {
        tracing::error!("{e}");
    }
    let first = errors.first().cloned().unwrap_or_default();
    let more = match errors.len() {
        0 | 1 => String::new(),
        n => format!(" (and {} more, logged)", n - 1),
    };
    Failure {
        what: format!("{} has {} error(s)", path.display(), errors.len()),
        cause: format!("{first}{more}"),
        fix: format!(
            "correct the file (bridge-host check-config --config {} lists every error), then send SIGHUP again",
            path.display()
        ),
    }
}

fn monitor_failure(what: String, e: MonitorError) -> Failure {
    let fix = match e {
        MonitorError::Silent { .. } => "send SIGHUP again; if the monitor stays silent, restart the daemon",
        _ => "restart the daemon (it stops when its monitor is gone; systemd's Restart=on-failure restarts it)",
    };
    Failure {
        what,
        cause: e.to_string(),
        fix: fix.into(),
    }
}
