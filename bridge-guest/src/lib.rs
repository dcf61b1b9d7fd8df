//! bridge-guest: a tiny shim inside the sandbox. It serves `127.0.0.1:11434` and hands
//! each connection to bridge-host over its unix socket, or relays bytes (vsock, or a host
//! that does not take them). It holds no policy: anything in the
//! sandbox can reach the socket directly, so every check lives on the host.
#![forbid(unsafe_code)]

pub mod addrs;
pub mod cli;
pub mod copy;
pub mod doctor;
pub mod handoff;
pub mod relay;
