//! Least privilege for `serve`: started as root to bind and chown its sockets, the daemon
//! drops to `[privileges] user`/`group` (no supplementary groups, no capabilities in any
//! set, `no_new_privs`) before it announces readiness.
//!
//! Capabilities, the bounding set and `no_new_privs` belong to each thread, so the order
//! matters: [`Plan::prepare`] runs before any thread exists (new threads inherit what it
//! sets) and [`Plan::apply`] runs once everything is bound. The uid switch reaches every
//! thread (libc applies `setresuid` process-wide) and the kernel then empties their
//! permitted, effective and ambient sets. Started unprivileged with ambient capabilities
//! (systemd `AmbientCapabilities=CAP_CHOWN`), the threads clear their own sets when they
//! start ([`confine_thread`]), and the main thread clears its sets after binding.
//! Readiness waits until `/proc/self/task` shows no thread holding a capability.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use caps::{CapSet, Capability};
use nix::unistd::{Gid, Group, Uid, User};
use protocol::config::{Privileges, DEFAULT_USER, FALLBACK_USER};
use thiserror::Error;

mod monitor;
mod threads;
pub use monitor::confine_monitor;
pub use threads::confine_thread;

/// Why privileges could not be resolved or dropped.
#[derive(Debug, Error)]
pub enum PrivError {
    #[error("[privileges] user {0:?} does not exist on this host: create it (useradd --system --no-create-home --shell /usr/sbin/nologin {0}), name another user, or set run_as_root = true")]
    NoSuchUser(String),
    #[error("[privileges] group {0:?} does not exist on this host: create it (groupadd --system {0}) or name another group")]
    NoSuchGroup(String),
    #[error("[privileges] no user to run as: neither {DEFAULT_USER:?} nor {FALLBACK_USER:?} exists; create {DEFAULT_USER:?}, set [privileges] user, or set run_as_root = true")]
    NoDefaultUser,
    #[error("[privileges] user {0:?} is root (uid 0): name an unprivileged user, or set run_as_root = true to stay root")]
    UserIsRoot(String),
    #[error("cannot look up {what} {name:?}: {source}")]
    Lookup {
        what: &'static str,
        name: String,
        source: nix::Error,
    },
    #[error("cannot {step}: {source}")]
    Sys {
        step: &'static str,
        source: nix::Error,
    },
    #[error("cannot {step}: {source}")]
    Caps {
        step: &'static str,
        source: caps::errors::CapsError,
    },
    #[error("cannot chown {path} to the service user: {source}")]
    Chown {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("privileges were not dropped: {0}")]
    Verify(String),
}

impl PrivError {
    /// A configuration error (exit 64) rather than a failure of the system.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            PrivError::NoSuchUser(_)
                | PrivError::NoSuchGroup(_)
                | PrivError::NoDefaultUser
                | PrivError::UserIsRoot(_)
        )
    }
}

/// The user and group to switch to.
#[derive(Debug, Clone)]
pub struct Target {
    pub user: String,
    pub uid: Uid,
    pub gid: Gid,
}

/// What `serve` does about its privileges.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Started as root: switch to this user and group, keep nothing.
    Drop(Target),
    /// `run_as_root = true`: stay root, only `no_new_privs` is set.
    StayRoot,
    /// Not started as root: stay this user, clear any capabilities.
    AsIs,
}

/// Set once privileges are dropped: whom the daemon runs as.
static DROPPED_TO: OnceLock<String> = OnceLock::new();

fn lookup_user(name: &str) -> Result<Option<User>, PrivError> {
    User::from_name(name).map_err(|source| PrivError::Lookup {
        what: "user",
        name: name.to_owned(),
        source,
    })
}

/// Looks up the configured (or default) user and group. Named users and groups must
/// exist even when not started as root, so `check-config` and `serve` agree.
pub fn resolve(p: &Privileges, is_root: bool) -> Result<Plan, PrivError> {
    let user = match &p.user {
        Some(name) => Some(lookup_user(name)?.ok_or_else(|| PrivError::NoSuchUser(name.clone()))?),
        None => None,
    };
    let group = match &p.group {
        Some(name) => Some(
            Group::from_name(name)
                .map_err(|source| PrivError::Lookup {
                    what: "group",
                    name: name.clone(),
                    source,
                })?
                .ok_or_else(|| PrivError::NoSuchGroup(name.clone()))?,
        ),
        None => None,
    };
    if p.run_as_root {
        return Ok(if is_root { Plan::StayRoot } else { Plan::AsIs });
    }
    if !is_root {
        if let Some(u) = user.filter(|u| u.uid != nix::unistd::geteuid()) {
            tracing::warn!(
                "not started as root: [privileges] user {:?} cannot be switched to; running as uid {}",
                u.name,
                nix::unistd::geteuid()
            );
        }
        return Ok(Plan::AsIs);
    }
    let user = match user {
        Some(u) => u,
        None => match lookup_user(DEFAULT_USER)? {
            Some(u) => u,
            None => lookup_user(FALLBACK_USER)?.ok_or(PrivError::NoDefaultUser)?,
        },
    };
    if user.uid.is_root() {
        return Err(PrivError::UserIsRoot(user.name));
    }
    Ok(Plan::Drop(Target {
        gid: group.map_or(user.gid, |g| g.gid),
        user: user.name,
        uid: user.uid,
    }))
}

fn caps(step: &'static str) -> impl FnOnce(caps::errors::CapsError) -> PrivError {
    move |source| PrivError::Caps { step, source }
}

fn sys(step: &'static str) -> impl FnOnce(nix::Error) -> PrivError {
    move |source| PrivError::Sys { step, source }
}

impl Plan {
    /// Before any thread exists: sets `no_new_privs` and, unless staying root, empties
    /// the bounding (when allowed), inheritable and ambient sets. None of this takes away
    /// what binding and chowning need.
    pub fn prepare(&self) -> Result<(), PrivError> {
        nix::sys::prctl::set_no_new_privs().map_err(sys("set no_new_privs"))?;
        if matches!(self, Plan::StayRoot) {
            return Ok(());
        }
        // Dropping from the bounding set needs CAP_SETPCAP (root has it; a service user
        // normally has not, and then its bounding set is the service manager's business).
        if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
            caps::clear(None, CapSet::Bounding).map_err(caps("clear the bounding set"))?;
        }
        caps::clear(None, CapSet::Ambient).map_err(caps("clear the ambient set"))?;
        caps::clear(None, CapSet::Inheritable).map_err(caps("clear the inheritable set"))?;
        if matches!(self, Plan::AsIs) {
            threads::confine_new_threads();
        }
        Ok(())
    }

    /// Once listeners, sockets and the audit log are open, before readiness: switches
    /// user (chowning the audit directory and file the daemon created, so the service
    /// user can reopen them) and clears every capability; then checks the result.
    pub fn apply(&self, created: &Created) -> Result<(), PrivError> {
        match self {
            Plan::StayRoot => {
                tracing::warn!(
                    "running as root ([privileges] run_as_root = true): a flaw in the daemon would be a flaw with every power on the host; remove run_as_root to run as an unprivileged user"
                );
                return Ok(());
            }
            Plan::Drop(t) => {
                tracing::debug!(user = %t.user, uid = t.uid.as_raw(), gid = t.gid.as_raw(), "switching user");
                for p in created.dir.iter().chain(&created.file) {
                    std::os::unix::fs::chown(p, Some(t.uid.as_raw()), Some(t.gid.as_raw()))
                        .map_err(|source| PrivError::Chown {
                            path: p.clone(),
                            source,
                        })?;
                }
                nix::unistd::setgroups(&[]).map_err(sys("clear the supplementary groups"))?;
                nix::unistd::setresgid(t.gid, t.gid, t.gid).map_err(sys("switch group"))?;
                nix::unistd::setresuid(t.uid, t.uid, t.uid).map_err(sys("switch user"))?;
                if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
                    return Err(PrivError::Verify("setuid(0) still succeeds".into()));
                }
            }
            Plan::AsIs => {}
        }
        // Whether there was anything to give up (for the hints on later failures).
        let gave_up = matches!(self, Plan::Drop(_))
            || caps::read(None, CapSet::Permitted).is_ok_and(|p| !p.is_empty());
        // The switch above already emptied these; started unprivileged, this is what
        // removes capabilities such as an ambient CAP_CHOWN.
        for (set, step) in [
            (CapSet::Effective, "clear the effective set"),
            (CapSet::Permitted, "clear the permitted set"),
            (CapSet::Inheritable, "clear the inheritable set"),
            (CapSet::Ambient, "clear the ambient set"),
        ] {
            caps::clear(None, set).map_err(caps(step))?;
        }
        let mut sets = vec![
            CapSet::Effective,
            CapSet::Permitted,
            CapSet::Inheritable,
            CapSet::Ambient,
        ];
        if matches!(self, Plan::Drop(_)) {
            sets.push(CapSet::Bounding);
        }
        for set in sets {
            let left = caps::read(None, set).map_err(caps("read the capability sets"))?;
            if !left.is_empty() {
                return Err(PrivError::Verify(format!(
                    "{set:?} set still holds {left:?}"
                )));
            }
        }
        threads::every_thread_confined(matches!(self, Plan::Drop(_)))?;
        let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
        let user = User::from_uid(uid)
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| u.name);
        let what = format!("user {user} (uid {uid}, gid {gid})");
        tracing::info!(
            user = %user, uid = uid.as_raw(), gid = gid.as_raw(),
            supplementary_groups = if matches!(self, Plan::Drop(_)) { "none" } else { "unchanged" },
            capabilities = "none", no_new_privs = true,
            "privileges dropped: running as {what} without capabilities"
        );
        if gave_up {
            let _ = DROPPED_TO.set(what);
        }
        Ok(())
    }
}

/// What the daemon creates for the audit log while still root (to hand to the service user).
#[derive(Debug, Default)]
pub struct Created {
    dir: Option<PathBuf>,
    file: Option<PathBuf>,
}

impl Created {
    /// Notes, before the audit log is opened, which of its directory and file do not exist yet.
    pub fn before_opening(audit: &Path) -> Created {
        if audit.as_os_str() == protocol::config::AUDIT_TO_STDOUT {
            return Created::default(); // standard output: nothing is created
        }
        let dir = audit.parent().filter(|d| !d.as_os_str().is_empty());
        Created {
            dir: dir.filter(|d| !d.exists()).map(Path::to_owned),
            file: Some(audit.to_owned()).filter(|f| !f.exists()),
        }
    }
}

/// Whom the daemon runs as once it has dropped privileges (`None` before, or never).
pub fn dropped_to() -> Option<&'static str> {
    DROPPED_TO.get().map(String::as_str)
}

/// Added to errors that the dropped privileges may explain: whom the daemon runs as,
/// then `todo` (what to do about it). Empty while the daemon has not dropped them.
pub fn hint(todo: &str) -> String {
    match dropped_to() {
        Some(who) => {
            format!(" (the daemon dropped its privileges at start and runs as {who}: {todo})")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_users_must_exist() {
        let p = |user: &str| Privileges {
            user: Some(user.into()),
            ..Default::default()
        };
        let e = resolve(&p("no-such-user-xyz"), true).unwrap_err();
        assert!(e.is_config());
        assert!(
            e.to_string()
                .contains("\"no-such-user-xyz\" does not exist"),
            "{e}"
        );
        // Even when not root: check-config and serve agree.
        assert!(resolve(&p("no-such-user-xyz"), false).is_err());
        let e = resolve(&p("root"), true).unwrap_err();
        assert!(matches!(e, PrivError::UserIsRoot(_)), "{e}");
        let g = Privileges {
            group: Some("no-such-group-xyz".into()),
            ..Default::default()
        };
        assert!(matches!(resolve(&g, true), Err(PrivError::NoSuchGroup(_))));
    }

    #[test]
    fn the_plan_follows_the_start_and_the_opt_out() {
        let opt_out = Privileges {
            run_as_root: true,
            ..Default::default()
        };
        assert!(matches!(resolve(&opt_out, true), Ok(Plan::StayRoot)));
        assert!(matches!(resolve(&opt_out, false), Ok(Plan::AsIs)));
        assert!(matches!(
            resolve(&Privileges::default(), false),
            Ok(Plan::AsIs)
        ));
        // Root with no section: ollama-bridge if it exists, else nobody (both exist on
        // every system these tests run on, one way or the other).
        match resolve(&Privileges::default(), true).unwrap() {
            Plan::Drop(t) => {
                assert!(t.user == DEFAULT_USER || t.user == FALLBACK_USER, "{t:?}");
                assert!(!t.uid.is_root());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn created_notes_only_what_is_missing() {
        let t = tempfile::tempdir().unwrap();
        let c = Created::before_opening(&t.path().join("new/audit.jsonl"));
        assert_eq!(c.dir.as_deref(), Some(t.path().join("new").as_path()));
        assert!(c.file.is_some());
        std::fs::write(t.path().join("a.jsonl"), "").unwrap();
        let c = Created::before_opening(&t.path().join("a.jsonl"));
        assert!(c.dir.is_none() && c.file.is_none());
    }
}
