//! The command line (the README's reference): `serve`, `check-config`, `audit`, `status`,
//! and `completions`, `man` generated from this definition.

mod audit;
mod config;
mod serve;
mod status;
mod status_servers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "bridge-host",
    version,
    about = "The host side of ollama-bridge: the one policed path from sandboxes to Ollama",
    long_about = "Listens on one unix socket (or vsock port) per sandbox, checks every request against \
that sandbox's policy, rewrites what must be rewritten, forwards it to Ollama and writes an audit record.\n\n\
Quick start:  bridge-host serve --listen unix:/run/ollama-bridge/agent/ollama.sock --upstream http://127.0.0.1:11434",
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the daemon.
    Serve(serve::ServeArgs),
    /// Validate a configuration file: exit 0, or print each error with its line and exit 64.
    CheckConfig {
        /// The configuration file.
        #[arg(long, value_name = "PATH", default_value = config::DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Read the audit log.
    Audit(audit::AuditArgs),
    /// Ask the running daemon's listeners how they are: served, in flight, Ollama reachable.
    Status(status::StatusArgs),
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    #[command(after_help = "Install it where your shell looks, e.g.\n  \
bridge-host completions bash > /etc/bash_completion.d/bridge-host\n  \
bridge-host completions zsh > /usr/local/share/zsh/site-functions/_bridge-host\n  \
bridge-host completions fish > ~/.config/fish/completions/bridge-host.fish")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: cli_docs::Shell,
    },
    /// Print the man page bridge-host(1) on stdout, or write it and one page per subcommand to DIR.
    #[command(after_help = "Read it with: bridge-host man | man -l -")]
    Man {
        /// Write bridge-host.1 and bridge-host-SUBCOMMAND.1 into this directory (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print this help, or the help of the given subcommand (`help serve`).
    Help {
        /// The subcommand whose help to print.
        #[arg(value_name = "COMMAND")]
        command: Vec<String>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::CheckConfig { config } => config::check_config(&config),
        Cmd::Serve(args) => serve::serve(args),
        Cmd::Audit(args) => audit::run(args),
        Cmd::Status(args) => status::run(args),
        Cmd::Completions { shell } => cli_docs::completions(Cli::command(), shell),
        Cmd::Man { dir } => cli_docs::man(Cli::command(), dir.as_deref()),
        Cmd::Help { command } => {
            // `help X Y` is `X Y --help`: clap prints it and exits 0 (2 for an unknown X).
            let args = std::iter::once("bridge-host".to_owned())
                .chain(command)
                .chain(std::iter::once("--help".to_owned()));
            Cli::parse_from(args);
            ExitCode::SUCCESS
        }
    }
}
