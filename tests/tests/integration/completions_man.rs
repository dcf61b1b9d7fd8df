//! `completions SHELL` and `man [--dir DIR]` of both binaries: generated from the clap
//! definitions, so every subcommand the `--help` lists is completed and has a page, and the
//! pages are valid roff (groff renders them without a warning).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use bridge_tests::harness::{bin, guest_bin};

const SHELLS: [&str; 5] = ["bash", "zsh", "fish", "elvish", "powershell"];

fn binaries() -> [(&'static str, std::path::PathBuf); 2] {
    [
        ("bridge-host", bin("bridge-host")),
        ("bridge-guest", guest_bin()),
    ]
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The subcommands as `--help` lists them (its `Commands:` section).
fn subcommands(exe: &Path) -> BTreeSet<String> {
    let out = run(Command::new(exe).arg("--help"));
    let help = String::from_utf8(out.stdout).unwrap();
    let section = help
        .split("Commands:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no Commands: in {help}"));
    let subs: BTreeSet<String> = section
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(subs.len() >= 4, "{subs:?} from {help}");
    subs
}

/// groff (Debian: groff-base, which man-db pulls in), or a failure saying so.
fn groff() -> &'static str {
    let found = Command::new("groff").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "these tests render the man pages with groff: apt-get install groff-base \
         (./scripts/test installs it as root)"
    );
    "groff"
}

#[test]
fn every_shells_completions_name_every_subcommand() {
    for (name, exe) in binaries() {
        let subs = subcommands(&exe);
        for shell in SHELLS {
            let out = run(Command::new(&exe).args(["completions", shell]));
            let script = String::from_utf8(out.stdout).unwrap();
            assert!(script.contains(name), "{name} {shell}: {script}");
            for sub in &subs {
                assert!(
                    script.contains(sub.as_str()),
                    "{name} completions {shell} lacks {sub}"
                );
            }
        }
    }
}

/// What bash's completion offers for `words` (the last one being completed), running the
/// generated script as bash would.
fn bash_complete(exe: &Path, name: &str, words: &[&str]) -> BTreeSet<String> {
    let out = run(Command::new(exe).args(["completions", "bash"]));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("completion.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let cur = words.last().copied().unwrap_or("");
    let prev = if words.len() >= 2 {
        words[words.len() - 2]
    } else {
        name
    };
    let quoted: Vec<String> = std::iter::once(name)
        .chain(words.iter().copied())
        .map(|w| format!("'{w}'"))
        .collect();
    let program = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={}\n\
         f=$(complete -p '{name}' | sed 's/.* -F \\([^ ]*\\) .*/\\1/')\n\
         \"$f\" '{name}' '{cur}' '{prev}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" "),
        words.len()
    );
    let out = run(Command::new("bash").arg("-c").arg(program));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_the_subcommands_and_their_flags() {
    for (name, exe) in binaries() {
        let subs = subcommands(&exe);
        let offered = bash_complete(&exe, name, &[""]);
        for sub in &subs {
            assert!(
                offered.contains(sub),
                "{name} <TAB>: {offered:?} lacks {sub}"
            );
        }
        let mut shells = bash_complete(&exe, name, &["completions", ""]);
        shells.retain(|w| !w.starts_with('-'));
        assert_eq!(
            shells,
            SHELLS.iter().map(|s| s.to_string()).collect(),
            "{name} completions <TAB>"
        );
    }
    let host = bin("bridge-host");
    let flags = bash_complete(&host, "bridge-host", &["check-config", "--"]);
    assert!(flags.contains("--config"), "{flags:?}");
    let flags = bash_complete(&host, "bridge-host", &["serve", "--"]);
    for f in [
        "--config",
        "--listen",
        "--upstream",
        "--allow-model",
        "--num-ctx",
    ] {
        assert!(flags.contains(f), "serve --<TAB>: {flags:?} lacks {f}");
    }
    let flags = bash_complete(&guest_bin(), "bridge-guest", &["doctor", "--"]);
    for f in ["--connect", "--model"] {
        assert!(flags.contains(f), "doctor --<TAB>: {flags:?} lacks {f}");
    }
}

#[test]
fn man_writes_a_valid_page_per_subcommand() {
    let groff = groff();
    for (name, exe) in binaries() {
        let subs = subcommands(&exe);
        let dir = tempfile::tempdir().unwrap();
        let out_dir = dir.path().join("man1");
        let out = run(Command::new(&exe).args(["man", "--dir"]).arg(&out_dir));
        let printed = String::from_utf8(out.stdout).unwrap();
        let mut want: BTreeSet<String> = subs.iter().map(|s| format!("{name}-{s}.1")).collect();
        want.insert(format!("{name}.1"));
        let written: BTreeSet<String> = std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(written, want, "{name} man --dir");
        assert_eq!(printed.lines().count(), want.len(), "{printed}");

        // Without --dir: the main page on stdout, the same as the file.
        let stdout_page = run(Command::new(&exe).arg("man")).stdout;
        assert_eq!(
            stdout_page,
            std::fs::read(out_dir.join(format!("{name}.1"))).unwrap()
        );

        for page in &want {
            let path = out_dir.join(page);
            // -ww: every warning; -z: parse and format, print nothing but diagnostics.
            let out = run(Command::new(groff).args(["-man", "-ww", "-z"]).arg(&path));
            let warnings = String::from_utf8_lossy(&out.stderr);
            assert!(warnings.is_empty(), "{page}: {warnings}");
        }

        // The main page, rendered, names the program and lists every subcommand's page.
        let out = run(Command::new(groff)
            .args(["-man", "-Tascii", "-P", "-cbou"])
            .arg(out_dir.join(format!("{name}.1"))));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("NAME") && text.contains(name), "{text}");
        for sub in &subs {
            assert!(
                text.contains(&format!("{name}-{sub}(1)")),
                "{name}.1 lacks {sub}: {text}"
            );
        }
    }
}

#[test]
fn man_reports_a_directory_it_cannot_create() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    for (name, exe) in binaries() {
        let out = Command::new(&exe)
            .args(["man", "--dir"])
            .arg(file.join("man1"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(&format!("{name}: cannot create ")) && err.contains("a-file"),
            "{err}"
        );
    }
}
