//! The bridge-host command line as operators use it (the README's reference).

use std::path::{Path, PathBuf};
use std::process::Command;

fn host() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bridge-host"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(toml_files(&p));
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn every_deploy_and_valid_fixture_config_passes_check_config() {
    let mut files = toml_files(&root().join("deploy"));
    files.extend(toml_files(&root().join("tests/fixtures/config/valid")));
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        let out = host()
            .arg("check-config")
            .arg("--config")
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_invalid_fixture_config_exits_64_with_a_line() {
    let files = toml_files(&root().join("tests/fixtures/config/invalid"));
    assert!(files.len() >= 5, "{files:?}");
    for f in files {
        let out = host()
            .arg("check-config")
            .arg("--config")
            .arg(&f)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{}: {err}", f.display());
        // Each fixture names the message it must produce on its first line: `# expect: ...`.
        let text = std::fs::read_to_string(&f).unwrap();
        let want = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .expect("expect line");
        assert!(
            err.contains(want),
            "{}: want {want:?} in {err}",
            f.display()
        );
        assert!(err.contains(&format!("{}:", f.display())), "{err}");
    }
}

#[test]
fn unknown_key_is_reported_with_its_line() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("bad.toml");
    std::fs::write(
        &f,
        "[upstream]\nurl = \"http://127.0.0.1:1\"\nbogus_key = 1\n",
    )
    .unwrap();
    let out = host()
        .arg("check-config")
        .arg("--config")
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:3: unknown field `bogus_key`", f.display())),
        "{err}"
    );
}

#[test]
fn serve_exits_64_on_a_bad_config_and_1_when_it_cannot_bind() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("bad.toml");
    std::fs::write(&f, "[[sandbox]]\nname = \"a\"\nlisten = \"tcp:1\"\n").unwrap();
    let out = host()
        .arg("serve")
        .arg("--config")
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let precious = t.path().join("not-a-socket");
    std::fs::write(&precious, "data").unwrap();
    let out = host()
        .args(["serve", "--listen"])
        .arg(format!("unix:{}", precious.display()))
        .env("XDG_STATE_HOME", t.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not a socket; refusing to replace it"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "data");
}

#[test]
fn help_lists_the_contract_commands() {
    let out = host().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "check-config", "audit"] {
        assert!(text.contains(cmd), "{text}");
    }
    let out = host().args(["serve", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--listen",
        "--upstream",
        "--allow-model",
        "--log-format",
    ] {
        assert!(text.contains(flag), "{text}");
    }
}
