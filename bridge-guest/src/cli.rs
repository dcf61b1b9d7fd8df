//! The command line (the README's reference): relay, `run -- COMMAND`, `doctor`, and
//! `completions`, `man` generated from this definition.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use tokio::net::TcpListener;

pub use crate::addrs::{Addrs, DEFAULT_CONNECT, DEFAULT_LISTEN};

/// `run --help`'s exit codes.
const RUN_EXIT_CODES: &str = "\
`--` ends bridge-guest's own options: everything after it is COMMAND and its arguments.
OLLAMA_HOST is set for COMMAND to the relay's address unless already set.

Exit codes:
  N      COMMAND's own exit status
  128+N  COMMAND was killed by signal N
  126    COMMAND could not be started (e.g. not executable)
  127    COMMAND was not found
  69     the listen address is taken (another bridge-guest or Ollama?)";

#[derive(Debug, Parser)]
#[command(
    name = "bridge-guest",
    version,
    about = "Serves 127.0.0.1:11434 inside a sandbox: hands each connection to bridge-host over its unix socket, or relays (vsock, or a host that says no)",
    args_conflicts_with_subcommands = false
)]
pub struct Cli {
    #[command(flatten)]
    pub addrs: Addrs,
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Relay while COMMAND runs, then exit with its status (for container entrypoints).
    #[command(
        override_usage = "bridge-guest run [--listen ADDR] [--connect ADDR] -- COMMAND [ARGS]...",
        after_help = RUN_EXIT_CODES
    )]
    Run {
        /// The command and its arguments.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<String>,
    },
    /// Check each hop to Ollama and say which one is broken.
    #[command(after_help = crate::doctor::EXIT_CODES)]
    Doctor {
        /// Also check that this model is allowed and answers.
        #[arg(long, value_name = "NAME")]
        model: Option<String>,
    },
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: cli_docs::Shell,
    },
    /// Print the man page bridge-guest(1) on stdout, or write it and one page per subcommand to DIR.
    #[command(after_help = "Read it with: bridge-guest man | man -l -")]
    Man {
        /// Write bridge-guest.1 and bridge-guest-SUBCOMMAND.1 into this directory (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // These two need no runtime (and no relay address).
    let cmd = match cli.cmd {
        Some(Cmd::Completions { shell }) => return cli_docs::completions(Cli::command(), shell),
        Some(Cmd::Man { dir }) => return cli_docs::man(Cli::command(), dir.as_deref()),
        cmd => cmd,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bridge-guest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        match cmd {
            None => relay_forever(&cli.addrs).await,
            Some(Cmd::Run { command }) => run(&cli.addrs, command).await,
            Some(Cmd::Doctor { model }) => crate::doctor::run(&cli.addrs, model.as_deref()).await,
            Some(Cmd::Completions { .. } | Cmd::Man { .. }) => unreachable!("handled above"),
        }
    })
}

async fn bind(addrs: &Addrs) -> Result<TcpListener, ExitCode> {
    TcpListener::bind(addrs.listen).await.map_err(|e| {
        eprintln!(
            "bridge-guest: cannot listen on {}: {e} (is another bridge-guest or Ollama already serving it? set --listen or OLLAMA_BRIDGE_LISTEN)",
            addrs.listen
        );
        ExitCode::from(69)
    })
}

/// The address actually served (port 0 resolved).
fn local(l: &TcpListener, addrs: &Addrs) -> SocketAddr {
    l.local_addr().unwrap_or(addrs.listen)
}

async fn relay_forever(addrs: &Addrs) -> ExitCode {
    let listener = match bind(addrs).await {
        Ok(l) => l,
        Err(c) => return c,
    };
    let handoff = ask_handoff(addrs).await;
    println!("relaying {} -> {}", local(&listener, addrs), addrs.connect);
    let relay = serve(listener, addrs, handoff);
    wait_for_stop().await;
    relay.abort();
    ExitCode::SUCCESS
}

/// Asks for the hand-off once before the ready line (so the first connection already
/// goes the short way); says on stderr what came of it.
async fn ask_handoff(addrs: &Addrs) -> Option<crate::handoff::Outcome> {
    let path = addrs.handoff_socket()?;
    let outcome = crate::handoff::negotiate(path).await;
    eprintln!("bridge-guest: {}", outcome.describe());
    Some(outcome)
}

/// Starts the accept loop, and the keeper of the hand-off's control connection.
fn serve(
    listener: TcpListener,
    addrs: &Addrs,
    handoff: Option<crate::handoff::Outcome>,
) -> tokio::task::JoinHandle<()> {
    let channel = match (handoff, addrs.handoff_socket()) {
        (Some(first), Some(path)) => {
            let ch = std::sync::Arc::new(crate::handoff::Channel::default());
            tokio::spawn(crate::handoff::keep(ch.clone(), path.to_owned(), first));
            Some(ch)
        }
        _ => None,
    };
    tokio::spawn(crate::relay::serve(
        listener,
        addrs.connect.clone(),
        channel,
    ))
}

async fn wait_for_stop() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

async fn run(addrs: &Addrs, command: Vec<String>) -> ExitCode {
    let listener = match bind(addrs).await {
        Ok(l) => l,
        Err(c) => return c,
    };
    let handoff = ask_handoff(addrs).await;
    let served = local(&listener, addrs);
    eprintln!("relaying {served} -> {}", addrs.connect);
    let relay = serve(listener, addrs, handoff);
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    if std::env::var_os("OLLAMA_HOST").is_none() {
        cmd.env("OLLAMA_HOST", format!("http://{served}"));
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bridge-guest: cannot start {:?}: {e}", command[0]);
            return ExitCode::from(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
    };
    let status = forward_signals_until_exit(&mut child).await;
    relay.abort();
    match status {
        Ok(s) => exit_code_of(s),
        Err(e) => {
            eprintln!("bridge-guest: waiting for {:?}: {e}", command[0]);
            ExitCode::FAILURE
        }
    }
}

/// Passes SIGTERM, SIGINT, SIGHUP and SIGQUIT on to the child (we may be PID 1).
async fn forward_signals_until_exit(
    child: &mut tokio::process::Child,
) -> std::io::Result<std::process::ExitStatus> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use tokio::signal::unix::{signal, SignalKind};
    let kinds = [
        (SignalKind::terminate(), Signal::SIGTERM),
        (SignalKind::interrupt(), Signal::SIGINT),
        (SignalKind::hangup(), Signal::SIGHUP),
        (SignalKind::quit(), Signal::SIGQUIT),
    ];
    let mut streams = Vec::new();
    for (k, s) in kinds {
        if let Ok(st) = signal(k) {
            streams.push((st, s));
        }
    }
    let pid = child.id().map(|p| Pid::from_raw(p as i32));
    loop {
        let recv_any = async {
            let futs = streams.iter_mut().map(|(st, s)| {
                let s = *s;
                Box::pin(async move {
                    st.recv().await;
                    s
                })
            });
            futures_select_all(futs).await
        };
        tokio::select! {
            status = child.wait() => return status,
            sig = recv_any => {
                if let Some(pid) = pid {
                    let _ = kill(pid, sig);
                }
            }
        }
    }
}

/// Waits for the first of several futures (a tiny `select_all`).
async fn futures_select_all<F, T>(futs: impl Iterator<Item = F>) -> T
where
    F: std::future::Future<Output = T> + Unpin,
{
    let mut futs: Vec<F> = futs.collect();
    std::future::poll_fn(move |cx| {
        for f in futs.iter_mut() {
            if let std::task::Poll::Ready(v) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready(v);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

fn exit_code_of(s: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => ExitCode::from(c as u8),
        (None, Some(sig)) => ExitCode::from(128u8.wrapping_add(sig as u8)),
        _ => ExitCode::FAILURE,
    }
}
