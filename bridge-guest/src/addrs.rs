//! The two addresses every subcommand needs: what the guest serves inside the sandbox and
//! where bridge-host's socket is. Shared by `cli` (relay, `run`) and `doctor`.

use std::net::SocketAddr;

use clap::Args;
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
}
