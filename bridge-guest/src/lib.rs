//! bridge-guest: a tiny shim inside the sandbox. It serves `127.0.0.1:11434` and relays
//! bytes to bridge-host over a unix socket or vsock. It holds no policy: anything in the
//! sandbox can reach the socket directly, so every check lives on the host.
#![forbid(unsafe_code)]

pub mod addrs;
pub mod cli;
pub mod doctor;
pub mod relay;
