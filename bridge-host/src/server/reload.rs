//! What a reload changes, decided without touching a socket: which sandboxes keep their
//! listener (their policy is swapped in place), which are added, which are removed. A
//! sandbox whose listen address changed is removed and added, so its old socket path is
//! free before the new one is bound. Also the sections a reload cannot change, and the
//! line that reports a reload (`reload failed: ...` unless every part happened).

use protocol::config::{Config, Sandbox};
use protocol::ListenAddr;

/// The sandboxes a reload keeps, adds and removes, by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Running, and in the new configuration on the same address.
    pub keep: Vec<String>,
    /// In the new configuration, not running on its address.
    pub add: Vec<String>,
    /// Running, and gone from the new configuration or moved.
    pub remove: Vec<String>,
}

/// Compares the running listeners (name, address) with the new configuration's sandboxes.
/// Each list is in a stable order: `remove` by name, `keep` and `add` in file order.
pub fn diff<'a>(
    running: impl IntoIterator<Item = (&'a str, &'a ListenAddr)>,
    new: &[Sandbox],
) -> Diff {
    let running: Vec<(&str, &ListenAddr)> = running.into_iter().collect();
    let at = |name: &str| running.iter().find(|(n, _)| *n == name).map(|(_, a)| *a);
    let mut d = Diff::default();
    for (name, addr) in &running {
        let stays = new
            .iter()
            .any(|sb| sb.name.as_str() == *name && sb.listen == **addr);
        if !stays {
            d.remove.push((*name).to_owned());
        }
    }
    d.remove.sort();
    for sb in new {
        let name = sb.name.as_str();
        if at(name).is_some_and(|a| *a == sb.listen) {
            d.keep.push(name.to_owned());
        } else {
            d.add.push(name.to_owned());
        }
    }
    d
}

/// A part of a reload that did not happen: what, why, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// E.g. `sandbox "x" was not opened`.
    pub what: String,
    /// The error, with its cause.
    pub cause: String,
    /// What the operator can do.
    pub fix: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}; to fix: {}", self.what, self.cause, self.fix)
    }
}

/// The line printed (stdout) and logged when the new configuration could not be had at
/// all: nothing changed.
pub fn refused(f: &Failure) -> String {
    format!("reload failed: {f}; the running configuration stays")
}

/// What a reload that got its configuration did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub kept: usize,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// The parts that did not happen: any makes the reload a failure.
    pub failed: Vec<Failure>,
}

impl Report {
    /// The line printed (stdout) and logged: `reloaded configuration: ...` only when
    /// every part happened, else `reload failed: ...` with each failure and what was
    /// applied nonetheless.
    pub fn line(&self) -> String {
        let done = format!(
            "{} sandbox(es) kept, added [{}], removed [{}]",
            self.kept,
            self.added.join(", "),
            self.removed.join(", ")
        );
        if self.failed.is_empty() {
            return format!("reloaded configuration: {done}");
        }
        let failed: Vec<String> = self.failed.iter().map(Failure::to_string).collect();
        format!(
            "reload failed: {}; the rest was applied: {done}",
            failed.join(" / ")
        )
    }
}

/// Warnings for the sections a reload leaves as they were until a restart.
pub fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut w = Vec::new();
    if new.audit != old.audit {
        w.push(
            "[audit] changed: the audit file and log_prompts keep their old values until a restart",
        );
    }
    if new.metrics != old.metrics {
        w.push("[metrics] changed: the metrics listener keeps its old address until a restart");
    }
    if new.privileges != old.privileges {
        w.push("[privileges] changed: whom the daemon runs as changes at the next start");
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::config::DefaultsEnv;

    fn config(body: &str) -> Config {
        let env = DefaultsEnv {
            is_root: false,
            xdg_runtime_dir: Some("/run/user/1000".into()),
            xdg_state_home: None,
            home: Some("/home/u".into()),
            uid: 1000,
        };
        Config::parse(body, &env).unwrap_or_else(|e| panic!("{e}"))
    }

    fn sandbox(name: &str, path: &str) -> String {
        format!("[[sandbox]]\nname = \"{name}\"\nlisten = \"unix:{path}\"\n")
    }

    fn running(c: &Config) -> Vec<(&str, &ListenAddr)> {
        c.sandboxes
            .iter()
            .map(|s| (s.name.as_str(), &s.listen))
            .collect()
    }

    #[test]
    fn keeps_adds_removes_and_moves() {
        let old = config(
            &[
                sandbox("a", "/r/a.sock"),
                sandbox("b", "/r/b.sock"),
                sandbox("c", "/r/c.sock"),
            ]
            .concat(),
        );
        let new = config(
            &[
                sandbox("d", "/r/d.sock"),
                sandbox("b", "/r/b2.sock"),
                sandbox("a", "/r/a.sock"),
            ]
            .concat(),
        );
        let d = diff(running(&old), &new.sandboxes);
        assert_eq!(d.keep, ["a"]);
        assert_eq!(d.add, ["d", "b"], "a moved listener is added again");
        assert_eq!(d.remove, ["b", "c"], "and removed first");
    }

    #[test]
    fn the_same_configuration_changes_nothing() {
        let c = config(&[sandbox("a", "/r/a.sock"), sandbox("b", "/r/b.sock")].concat());
        let d = diff(running(&c), &c.sandboxes);
        assert_eq!(
            d,
            Diff {
                keep: vec!["a".into(), "b".into()],
                ..Diff::default()
            }
        );
        assert!(restart_only(&c, &c).is_empty());
    }

    #[test]
    fn from_nothing_and_to_nothing() {
        let c = config(&sandbox("a", "/r/a.sock"));
        assert_eq!(diff([], &c.sandboxes).add, ["a"]);
        assert_eq!(diff(running(&c), &[]).remove, ["a"]);
    }

    #[test]
    fn a_reload_reads_as_success_only_when_every_part_happened() {
        let mut r = Report {
            kept: 1,
            added: vec!["b".into()],
            removed: vec!["c".into()],
            failed: vec![],
        };
        assert_eq!(
            r.line(),
            "reloaded configuration: 1 sandbox(es) kept, added [b], removed [c]"
        );
        r.failed.push(Failure {
            what: "sandbox \"d\" was not opened".into(),
            cause: "cannot create directory /r/d: Permission denied".into(),
            fix: "restart the daemon".into(),
        });
        let line = r.line();
        assert!(
            line.starts_with("reload failed: sandbox \"d\" was not opened: cannot create directory /r/d: Permission denied; to fix: restart the daemon; the rest was applied: 1 sandbox(es) kept, added [b]"),
            "{line}"
        );
        assert!(!line.contains("reloaded"), "{line}");
        assert_eq!(
            refused(&r.failed[0]),
            "reload failed: sandbox \"d\" was not opened: cannot create directory /r/d: Permission denied; to fix: restart the daemon; the running configuration stays"
        );
    }

    #[test]
    fn sections_a_reload_cannot_change() {
        let a = config(&sandbox("a", "/r/a.sock"));
        let b = config(&format!(
            "[audit]\npath = \"/x/audit.jsonl\"\n{}",
            sandbox("a", "/r/a.sock")
        ));
        let w = restart_only(&a, &b);
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("[audit]"), "{w:?}");
    }
}
