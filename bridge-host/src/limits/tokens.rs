//! Token budgets per sandbox (`tokens_per_hour`, `tokens_per_day`): the [`Ledger`] of
//! every sandbox's usage (per-minute buckets over the last day, `protocol::budget`),
//! checked before a model request and charged after its answer. Usage is kept by
//! sandbox name for the daemon's whole life, so a reload never resets it (changing a
//! budget changes the threshold, not what was used), and it is saved to a small state
//! file next to the audit log: written atomically (a temporary file renamed over it),
//! every [`SAVE_EVERY`] while something changed and at shutdown, read at start.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use protocol::budget::{State, TokenBudget, Usage, WindowUse, STATE_VERSION};
use protocol::config::Sandbox;
use protocol::error::{BridgeError, Reason};

use crate::os::clock::unix_secs;

/// How often the state file is rewritten while usage changes.
pub const SAVE_EVERY: Duration = Duration::from_secs(10);

/// The state file of the audit log at `audit`: `NAME.budgets.json` beside it
/// (`audit.jsonl` → `audit.budgets.json`).
pub fn state_path(audit: &Path) -> PathBuf {
    let stem = audit
        .file_stem()
        .map_or_else(|| "audit".into(), |s| s.to_string_lossy().into_owned());
    audit.with_file_name(format!("{stem}.budgets.json"))
}

/// Every sandbox's token usage, and where it is saved.
#[derive(Default)]
pub struct Ledger {
    usage: Mutex<BTreeMap<String, Usage>>,
    /// The configured budgets by sandbox (for metrics; requests use their own context's).
    budgets: Mutex<BTreeMap<String, TokenBudget>>,
    path: Option<PathBuf>,
    dirty: AtomicBool,
    /// Some sandbox has a budget: the state is worth saving.
    persist: AtomicBool,
}

impl Ledger {
    /// The ledger saved at `path`, or an empty one when there is none yet. A file that
    /// cannot be read starts the budgets empty, with a warning (never fatal).
    pub fn open(path: PathBuf) -> Ledger {
        let usage = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
                Ok(s) if s.version == STATE_VERSION => {
                    tracing::info!(path = %path.display(), sandboxes = s.sandboxes.len(), "token budgets restored");
                    s.sandboxes
                }
                Ok(s) => {
                    tracing::warn!(path = %path.display(), version = s.version, "token budget state of an unknown version ignored: budgets start empty");
                    BTreeMap::new()
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "token budget state unreadable: budgets start empty");
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the token budget state: budgets start empty");
                BTreeMap::new()
            }
        };
        Ledger {
            usage: Mutex::new(usage),
            path: Some(path),
            ..Ledger::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Usage>> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The budgets of the configuration in force (at start and after each reload). The
    /// state file is written only while some sandbox has a budget.
    pub fn configure(&self, sandboxes: &[Sandbox]) {
        let mut b = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        *b = sandboxes
            .iter()
            .map(|s| (s.name.to_string(), s.tokens))
            .collect();
        let any = sandboxes.iter().any(|s| s.tokens.is_set());
        self.persist.store(any, Ordering::Relaxed);
    }

    /// Admits a model request of `sb` while each of its budgets has tokens left;
    /// otherwise 429 `budget_exhausted` with the budget, when it refills, `Retry-After`.
    pub fn check(&self, sb: &Sandbox) -> Result<(), BridgeError> {
        if !sb.tokens.is_set() {
            return Ok(());
        }
        let now = unix_secs();
        let usage = self.lock();
        let Some(u) = usage.get(sb.name.as_str()) else {
            return Ok(());
        };
        u.check(sb.tokens, now).map_err(|e| {
            BridgeError::new(Reason::BudgetExhausted, e.message(sb.name.as_str()))
                .with_retry_after(e.retry_after)
        })
    }

    /// Charges `tokens` used by `sandbox` now.
    pub fn charge(&self, sandbox: &str, tokens: u64) {
        if tokens == 0 {
            return;
        }
        self.lock()
            .entry(sandbox.to_owned())
            .or_default()
            .charge(unix_secs(), tokens);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// `sb`'s usage in both windows now, with its budgets.
    pub fn report(&self, sb: &Sandbox) -> (u64, [WindowUse; 2]) {
        let now = unix_secs();
        let u = self
            .lock()
            .get(sb.name.as_str())
            .cloned()
            .unwrap_or_default();
        (now, u.report(sb.tokens, now))
    }

    /// Every configured sandbox's usage now (for the metrics).
    pub fn snapshot(&self) -> Vec<(String, [WindowUse; 2])> {
        let now = unix_secs();
        let budgets = self
            .budgets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let usage = self.lock();
        budgets
            .into_iter()
            .map(|(name, b)| {
                let u = usage.get(&name).cloned().unwrap_or_default();
                let r = u.report(b, now);
                (name, r)
            })
            .collect()
    }

    /// Writes the state file if usage changed since the last write (`force`: anyway).
    /// `Ok(false)` when there was nothing to write or nowhere to write it.
    pub fn save(&self, force: bool) -> io::Result<bool> {
        let Some(path) = self
            .path
            .as_ref()
            .filter(|_| self.persist.load(Ordering::Relaxed))
        else {
            return Ok(false);
        };
        if !self.dirty.swap(false, Ordering::Relaxed) && !force {
            return Ok(false);
        }
        let now = unix_secs();
        let state = State {
            version: STATE_VERSION,
            sandboxes: self
                .lock()
                .iter()
                .filter(|(_, u)| !u.is_empty_at(now))
                .map(|(n, u)| (n.clone(), u.clone()))
                .collect(),
        };
        let text = serde_json::to_vec(&state).map_err(io::Error::other)?;
        write_atomically(path, &text).inspect_err(|_| {
            // Still to be written.
            self.dirty.store(true, Ordering::Relaxed);
        })?;
        Ok(true)
    }

    /// Tokens `sandbox` used in the last hour (unit tests).
    #[cfg(test)]
    pub fn used_in_the_hour(&self, sandbox: &str) -> u64 {
        self.lock()
            .get(sandbox)
            .map_or(0, |u| u.used(protocol::budget::Window::Hour, unix_secs()))
    }

    /// Where the state is saved.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, renames it over `path`:
/// a reader (or a crash) sees the old state or the new, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::config::{Config, DefaultsEnv};

    fn sandbox(keys: &str) -> Sandbox {
        let text = format!("[[sandbox]]\nname = \"s\"\nlisten = \"unix:/s.sock\"\n{keys}\n");
        Config::parse(&text, &DefaultsEnv::default())
            .unwrap()
            .sandboxes
            .remove(0)
    }

    #[test]
    fn spent_budgets_refuse_until_they_refill_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir.path().join("audit.jsonl"));
        assert_eq!(path, dir.path().join("audit.budgets.json"));
        let sb = sandbox("tokens_per_hour = 100");
        let l = Ledger::open(path.clone());
        l.configure(std::slice::from_ref(&sb));
        l.check(&sb).unwrap();
        l.charge("s", 99);
        l.check(&sb).unwrap();
        l.charge("s", 5);
        let e = l.check(&sb).unwrap_err();
        assert_eq!((e.status(), e.reason), (429, Reason::BudgetExhausted));
        assert!((1..=3600).contains(&e.retry_after.unwrap()), "{e:?}");
        assert!(e.message.contains("tokens_per_hour"), "{}", e.message);
        // Another sandbox, and the same one without a budget, are not refused.
        l.check(&sandbox("")).unwrap();
        let (_, r) = l.report(&sb);
        assert_eq!((r[0].used, r[0].left), (104, Some(0)));
        assert!(r[0].refills_in.is_some());

        assert!(l.save(false).unwrap());
        assert!(!l.save(false).unwrap(), "nothing changed since");
        let again = Ledger::open(path.clone());
        assert!(again.check(&sb).is_err(), "restored from the state file");
        assert!(!dir.path().join("audit.budgets.json.tmp").exists());

        // An unreadable file starts empty, never fails.
        std::fs::write(&path, b"{not json").unwrap();
        Ledger::open(path).check(&sb).unwrap();
    }

    #[test]
    fn the_snapshot_covers_configured_sandboxes() {
        let l = Ledger::default();
        let sb = sandbox("tokens_per_day = 10");
        l.configure(std::slice::from_ref(&sb));
        l.charge("s", 4);
        l.charge("gone", 4);
        let snap = l.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].0, "s");
        assert_eq!((snap[0].1[1].used, snap[0].1[1].left), (4, Some(6)));
        assert_eq!(snap[0].1[0].left, None, "no hour budget");
        assert!(!l.save(true).unwrap(), "no path: nothing written");
    }
}
