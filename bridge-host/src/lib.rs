//! bridge-host: the host daemon. Listeners per sandbox, the request pipeline
//! (parse → decide → rewrite → forward → observe), the upstream client and the audit log.
#![forbid(unsafe_code)]

mod accept;
pub mod audit;
pub mod audit_cli;
pub mod audit_follow;
pub mod body;
pub mod budget;
pub mod cli;
pub mod conn;
pub mod deadline;
pub mod hangup;
pub mod limit;
pub mod listen;
mod listing;
pub mod metrics;
pub mod notify;
mod openai;
pub mod privileges;
pub mod record;
pub mod reqbody;
pub mod server;
pub mod service;
pub mod status;
pub mod status_cli;
pub mod upstream;

pub use server::{Server, Shutdown};

/// Binds everything, then serves until `shutdown`.
pub async fn run(config: protocol::Config, shutdown: Shutdown) -> anyhow::Result<()> {
    Server::bind(config)?.run(shutdown).await
}
