//! Refusing stale binaries: `cargo test -p ollama-bridge-tests` builds this package's own
//! binaries but not bridge-host or bridge-guest, which would then be tested as they were
//! last built. [`refuse_stale`] fails the test instead, naming the command that rebuilds
//! them. (`cargo test --workspace` builds every binary before it runs a test.)

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The source directories a workspace binary is built from, relative to the repository;
/// none for this package's own binaries (cargo builds them for its tests).
///
/// Only `.rs` files count: cargo does not rebuild for a `Cargo.toml` edit that changes
/// nothing it compiles, so a manifest newer than the binary would refuse a binary that
/// `cargo build` leaves as it is.
pub fn sources(name: &str) -> &'static [&'static str] {
    match name {
        "bridge-host" => &["bridge-host/src", "protocol/src", "cli-docs/src"],
        "bridge-guest" => &["bridge-guest/src", "protocol/src", "cli-docs/src"],
        _ => &[],
    }
}

/// The most recently modified `.rs` file under `dirs` (recursively), with its time.
/// Unit-test files (`tests.rs`, `tests_*.rs`, `*_tests.rs`: `#[cfg(test)]` modules) are not part of a
/// binary, so cargo does not rebuild it for them; they are skipped.
/// Panics when a directory cannot be read: a check over nothing would pass every binary.
fn is_unit_test_file(path: &Path) -> bool {
    path.file_stem()
        .and_then(|s| s.to_str())
        .is_some_and(|s| s == "tests" || s.starts_with("tests_") || s.ends_with("_tests"))
}

pub fn newest_source(dirs: &[PathBuf]) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut todo = dirs.to_vec();
    while let Some(dir) = todo.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read the source directory {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.expect("directory entry");
            let path = entry.path();
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") && !is_unit_test_file(&path) {
                let t = meta.modified().expect("mtime");
                let newer = match &newest {
                    Some((n, _)) => t > *n,
                    None => true,
                };
                if newer {
                    newest = Some((t, path));
                }
            }
        }
    }
    newest
}

/// Panics when `binary` is older than the newest `.rs` file under `dirs`.
pub fn refuse_stale(binary: &Path, dirs: &[PathBuf]) {
    let built = std::fs::metadata(binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
    if let Some((changed, source)) = newest_source(dirs) {
        assert!(
            changed <= built,
            "{} is older than its source {}: it would test stale code. \
             Build it first with `cargo build --workspace`, or run the tests with \
             `cargo test --workspace` (which builds every binary)",
            binary.display(),
            source.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn file_at(path: &Path, t: SystemTime) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let f = std::fs::File::create(path).unwrap();
        f.set_modified(t).unwrap();
    }

    #[test]
    fn the_newest_rs_file_counts_at_any_depth_and_other_files_do_not() {
        let d = tempfile::tempdir().unwrap();
        let t0 = SystemTime::now() - Duration::from_secs(3600);
        file_at(&d.path().join("a/lib.rs"), t0);
        file_at(
            &d.path().join("a/deep/er/mod.rs"),
            t0 + Duration::from_secs(60),
        );
        file_at(&d.path().join("a/notes.md"), t0 + Duration::from_secs(120));
        file_at(&d.path().join("b/main.rs"), t0 + Duration::from_secs(30));
        let dirs = [d.path().join("a"), d.path().join("b")];
        let (t, p) = newest_source(&dirs).unwrap();
        assert_eq!(p, d.path().join("a/deep/er/mod.rs"));
        assert_eq!(t, t0 + Duration::from_secs(60));

        let bin = d.path().join("bin");
        file_at(&bin, t0 + Duration::from_secs(60));
        refuse_stale(&bin, &dirs); // as new as its newest source: fresh
        file_at(&d.path().join("b/new.rs"), t0 + Duration::from_secs(61));
        let stale = std::panic::catch_unwind(|| refuse_stale(&bin, &dirs)).unwrap_err();
        let msg = stale.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("is older than its source") && msg.contains("b/new.rs"),
            "{msg}"
        );
        assert!(msg.contains("cargo build --workspace"), "{msg}");
    }

    #[test]
    fn the_workspace_binaries_have_source_directories() {
        let repo = crate::harness::repo();
        for name in ["bridge-host", "bridge-guest"] {
            let dirs: Vec<PathBuf> = sources(name).iter().map(|d| repo.join(d)).collect();
            assert!(!dirs.is_empty(), "{name}");
            assert!(newest_source(&dirs).is_some(), "{name}: no .rs file");
        }
    }
}
