//! `[privileges]`: whom `bridge-host serve` runs as once its sockets and audit log are
//! open. Only the names are checked here; looking them up is I/O and happens in
//! bridge-host.

use serde::Deserialize;

/// The user run as when nothing is configured, if it exists on the host.
pub const DEFAULT_USER: &str = "ollama-bridge";
/// The user run as when nothing is configured and [`DEFAULT_USER`] does not exist.
pub const FALLBACK_USER: &str = "nobody";

/// `[privileges]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrivileges {
    /// The user to run as once listeners, sockets and the audit log are open (when
    /// started as root). Default: "ollama-bridge" if that user exists, else "nobody".
    user: Option<toml::Spanned<String>>,
    /// The group to run as. Default: the user's primary group.
    group: Option<toml::Spanned<String>>,
    /// Stay root (an explicit opt-out of the privilege drop; a warning is logged).
    #[serde(default)]
    run_as_root: bool,
}

/// Whom the daemon runs as after start-up (checked names, not yet looked up).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Privileges {
    /// A user name; `None` = [`DEFAULT_USER`] if it exists, else [`FALLBACK_USER`].
    pub user: Option<String>,
    /// A group name; `None` = the user's primary group.
    pub group: Option<String>,
    /// Keep running as root (with `no_new_privs` still set).
    pub run_as_root: bool,
}

impl RawPrivileges {
    /// Validates the section; errors are `(span, message)` pairs.
    pub(super) fn check(&self) -> Result<Privileges, Vec<(std::ops::Range<usize>, String)>> {
        let mut errs = Vec::new();
        for (key, v) in [("user", &self.user), ("group", &self.group)] {
            if let Some(v) = v {
                if let Err(m) = check_name(v.get_ref()) {
                    errs.push((v.span(), format!("[privileges] {key}: {m}")));
                }
                if self.run_as_root {
                    errs.push((
                        v.span(),
                        format!("[privileges] {key} has no effect with run_as_root = true: remove it, or set run_as_root = false"),
                    ));
                }
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(Privileges {
            user: self.user.as_ref().map(|u| u.get_ref().clone()),
            group: self.group.as_ref().map(|g| g.get_ref().clone()),
            run_as_root: self.run_as_root,
        })
    }
}

/// A user or group name as `useradd` accepts it: 1-32 of `A-Z a-z 0-9 _ . -`, not
/// starting with `-`, not all digits (a number would be read as an id by other tools).
pub fn check_name(s: &str) -> Result<(), String> {
    let chars_ok = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if s.is_empty() || s.len() > 32 || !chars_ok || s.starts_with('-') {
        return Err(format!(
            "{s:?} is not a valid name: use 1-32 of A-Z a-z 0-9 _ . - (not starting with -)"
        ));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?}: give the name, not a numeric id"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, DefaultsEnv};

    const SANDBOX: &str = "[[sandbox]]\nname = \"a\"\nlisten = \"unix:/a\"\n";

    fn parse(section: &str) -> Result<Config, crate::ConfigErrors> {
        Config::parse(&format!("{SANDBOX}{section}"), &DefaultsEnv::default())
    }

    #[test]
    fn absent_section_means_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.privileges, super::Privileges::default());
        let c = parse("[privileges]\n").unwrap();
        assert_eq!(c.privileges, super::Privileges::default());
    }

    #[test]
    fn names_and_opt_out_are_read() {
        let c = parse("[privileges]\nuser = \"nobody\"\ngroup = \"nogroup\"\n").unwrap();
        assert_eq!(c.privileges.user.as_deref(), Some("nobody"));
        assert_eq!(c.privileges.group.as_deref(), Some("nogroup"));
        assert!(!c.privileges.run_as_root);
        let c = parse("[privileges]\nrun_as_root = true\n").unwrap();
        assert!(c.privileges.run_as_root);
        assert_eq!(c.privileges.user, None);
    }

    #[test]
    fn bad_sections_are_refused_with_their_line() {
        for (section, want) in [
            ("[privileges]\nusr = \"x\"\n", "unknown field `usr`"),
            (
                "[privileges]\nuser = \"\"\n",
                "[privileges] user: \"\" is not a valid name",
            ),
            ("[privileges]\nuser = \"a b\"\n", "is not a valid name"),
            (
                "[privileges]\ngroup = \"-g\"\n",
                "[privileges] group: \"-g\" is not a valid name",
            ),
            ("[privileges]\nuser = \"65534\"\n", "not a numeric id"),
            (
                "[privileges]\nrun_as_root = true\nuser = \"nobody\"\n",
                "[privileges] user has no effect with run_as_root = true",
            ),
            ("[privileges]\nrun_as_root = \"yes\"\n", "invalid type"),
        ] {
            let e = parse(section).unwrap_err();
            assert!(e.to_string().contains(want), "{section:?}: {e}");
            assert!(e.0[0].line.is_some_and(|l| l >= 4), "{section:?}: {e:?}");
        }
    }

    #[test]
    fn valid_names() {
        for ok in ["nobody", "ollama-bridge", "_svc", "a.b", "u1"] {
            assert!(super::check_name(ok).is_ok(), "{ok}");
        }
        assert!(super::check_name(&"x".repeat(33)).is_err());
    }
}
