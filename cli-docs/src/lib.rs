//! `completions SHELL` and `man [--dir DIR]`: shell completion scripts and man pages
//! generated from the command line's own clap definition, so they cannot drift from it.
//! Used by both bridge-host and bridge-guest (`completions` and `man` subcommands).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Command;
pub use clap_complete::Shell;

/// Prints the completion script for `shell` on stdout.
pub fn completions(mut cmd: Command, shell: Shell) -> ExitCode {
    let name = cmd.get_name().to_owned();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name.clone(), &mut out);
    if shell == Shell::Bash {
        out = fix_bash(&name, &out);
    }
    emit(&name, &out)
}

/// clap_complete 4.6's bash script names a subcommand's state `bridge__host__subcmd__X`
/// where it is set and `bridge__subcmd__host__subcmd__X` where it is matched, so nothing
/// after a subcommand completes for a binary with a hyphen in its name
/// (clap-rs/clap#6421). The matched form is rewritten to the set one; a fixed
/// clap_complete makes this a no-op.
fn fix_bash(name: &str, script: &[u8]) -> Vec<u8> {
    let wrong = format!("{}__subcmd__", name.replace('-', "__subcmd__"));
    let right = format!("{}__subcmd__", name.replace('-', "__"));
    String::from_utf8_lossy(script)
        .replace(&wrong, &right)
        .into_bytes()
}

/// Without `dir`: prints the main page (`NAME.1`) on stdout. With `dir`: writes `NAME.1`
/// and one page per subcommand (`NAME-SUB.1`) there, creating the directory, and prints
/// each path written.
pub fn man(mut cmd: Command, dir: Option<&Path>) -> ExitCode {
    cmd.build();
    let name = cmd.get_name().to_owned();
    let Some(dir) = dir else {
        let mut out = Vec::new();
        return match clap_mangen::Man::new(cmd).render(&mut out) {
            Ok(()) => emit(&name, &out),
            Err(e) => fail(&name, &format!("cannot render the man page: {e}")),
        };
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return fail(&name, &format!("cannot create {}: {e}", dir.display()));
    }
    let mut pages = Vec::new();
    collect(&cmd, &mut pages);
    for page in pages {
        let title = page
            .get_display_name()
            .unwrap_or(page.get_name())
            .to_owned();
        let path = dir.join(format!("{title}.1"));
        let mut out = Vec::new();
        let written = clap_mangen::Man::new(page)
            .render(&mut out)
            .and_then(|()| std::fs::write(&path, &out));
        if let Err(e) = written {
            return fail(&name, &format!("cannot write {}: {e}", path.display()));
        }
        println!("{}", path.display());
    }
    ExitCode::SUCCESS
}

/// `cmd` and, depth first, every subcommand the pages list (all but hidden ones); `help`
/// gets a page of its own, but not one per `help SUBCOMMAND`.
fn collect(cmd: &Command, pages: &mut Vec<Command>) {
    pages.push(cmd.clone());
    if cmd.get_name() == "help" {
        return;
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, pages);
    }
}

fn emit(name: &str, bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`| head`) is the reader's choice, not an error worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(name, &format!("cannot write to stdout: {e}")),
    }
}

fn fail(name: &str, msg: &str) -> ExitCode {
    eprintln!("{name}: {msg}");
    ExitCode::FAILURE
}
