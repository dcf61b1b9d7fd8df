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
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {err}", f.display());
        // A fixture's `# warn line N: ...` lines name the warnings it must produce.
        let text = std::fs::read_to_string(&f).unwrap();
        for want in expected(&f, &text, "warn") {
            assert!(
                err.contains(&want),
                "{}: want {want:?} in {err}",
                f.display()
            );
        }
        if !text.contains("# warn") {
            assert!(!err.contains("warning"), "{}: {err}", f.display());
        }
    }
}

/// The `# KIND: message` and `# KIND line N: message` lines at the top of a fixture, as
/// check-config must print them (`PATH: message` is not required for the first form).
fn expected(f: &Path, text: &str, kind: &str) -> Vec<String> {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(&format!("# {kind}"))?;
            if let Some(m) = rest.strip_prefix(": ") {
                return Some(m.to_owned());
            }
            let (n, m) = rest.strip_prefix(" line ")?.split_once(": ")?;
            Some(format!("{}:{n}: {m}", f.display()))
        })
        .collect()
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
        // Each fixture names the messages it must produce at its top: `# expect: ...`,
        // or `# expect line N: ...` for a message on line N; every one is printed.
        let text = std::fs::read_to_string(&f).unwrap();
        let wants = expected(&f, &text, "expect");
        assert!(!wants.is_empty(), "{}: no expect line", f.display());
        for want in &wants {
            assert!(
                err.contains(want.as_str()),
                "{}: want {want:?} in {err}",
                f.display()
            );
        }
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

#[test]
fn help_subcommand_answers_its_own_help_and_a_subcommands() {
    let out = host().args(["help", "--help"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = host().args(["help", "check-config"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--config"), "{text}");
}

#[test]
fn top_level_quick_start_uses_the_readmes_socket_path() {
    let out = host().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let quick = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Quick start:"))
        .expect("a quick start line");
    let listen = quick
        .split_whitespace()
        .skip_while(|w| *w != "--listen")
        .nth(1)
        .expect("--listen ADDR");
    assert!(
        readme.contains(&format!("--listen {listen}")),
        "{listen} is not the README's"
    );
}

#[test]
fn check_config_defaults_to_the_same_file_as_serve() {
    let out = host().args(["check-config", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/etc/ollama-bridge/bridge.toml"), "{text}");
    // Without --config it reads that file (absent here: an error naming it, exit 64).
    if !Path::new("/etc/ollama-bridge/bridge.toml").exists() {
        let out = host().arg("check-config").output().unwrap();
        assert_eq!(out.status.code(), Some(64));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("/etc/ollama-bridge/bridge.toml"), "{err}");
    }
}
