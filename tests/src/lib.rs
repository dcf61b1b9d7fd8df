//! Test support for ollama-bridge: the Ollama test double (behaving as Ollama does,
//! quirks included) and helpers that start bridge-host and bridge-guest as real processes on
//! temp-dir sockets and port 0.
#![forbid(unsafe_code)]

pub mod double;
pub mod fresh;
pub mod harness;
pub mod http;
pub mod native;
pub mod oai;
