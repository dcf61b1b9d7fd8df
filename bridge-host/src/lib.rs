//! bridge-host: the host daemon. Listeners per sandbox, the request pipeline
//! (read → check → rewrite → forward → relay → record), the upstream client and the audit log.
#![deny(unsafe_code)] // allowed in one module only: os/sys.rs

mod cli;
mod limits;
mod net;
mod observe;
mod os;
mod proxy;
mod server;

pub use cli::main;
pub use server::{Server, Shutdown};

/// Binds everything, then serves until `shutdown`.
pub async fn run(config: protocol::Config, shutdown: Shutdown) -> anyhow::Result<()> {
    Server::bind(config)?.run(shutdown).await
}
