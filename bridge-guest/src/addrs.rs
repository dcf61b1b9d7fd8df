//! The two addresses every subcommand needs: what the guest serves inside the sandbox and
//! where bridge-host's socket is, and whether to ask for the connection hand-off. Shared by `cli` (relay, `run`) and `doctor`.

use std::net::SocketAddr;

use clap::{Args, ValueEnum};
use protocol::listen::ConnectAddr;

/// Default address served inside the sandbox.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:11434";
/// Default socket of bridge-host as mounted into the sandbox.
pub const DEFAULT_CONNECT: &str = "unix:/run/ollama-bridge/ollama.sock";

#[derive(Debug, Clone, Args)]
pub struct Addrs {
    /// Address to serve inside the sandbox.
    #[arg(long, global = true, env = "OLLAMA_BRIDGE_LISTEN", default_value = DEFAULT_LISTEN, value_name = "IP:PORT")]
    pub listen: SocketAddr,
    /// bridge-host's socket: unix:PATH or vsock:CID:PORT (CID 2 is the host).
    #[arg(long, global = true, env = "OLLAMA_BRIDGE_CONNECT", default_value = DEFAULT_CONNECT, value_name = "ADDR")]
    pub connect: ConnectAddr,
    /// on: on a unix socket, hand each accepted connection to bridge-host (SCM_RIGHTS)
    /// when it agrees, else relay; off: always relay every byte. vsock always relays.
    #[arg(long, global = true, env = "OLLAMA_BRIDGE_HANDOFF", value_enum, default_value_t = Switch::On, value_name = "on|off")]
    pub handoff: Switch,
    /// Same as --handoff off.
    #[arg(long, global = true)]
    pub no_handoff: bool,
}

/// `--handoff on|off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

impl Addrs {
    /// The unix socket to ask for the hand-off on, unless it is switched off or the
    /// transport is vsock.
    pub fn handoff_socket(&self) -> Option<&std::path::Path> {
        match &self.connect {
            ConnectAddr::Unix(p) if self.handoff == Switch::On && !self.no_handoff => Some(p),
            _ => None,
        }
    }
}
