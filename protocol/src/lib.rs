//! Shared, I/O-free core of ollama-bridge: configuration schema, policy evaluation,
//! model-name canonicalisation, strict JSON, error bodies and the audit record.
#![forbid(unsafe_code)]

pub mod audit;
pub mod backoff;
pub mod body;
pub mod budget;
pub mod chunked;
pub mod config;
pub mod error;
pub mod framing;
pub mod handoff;
pub mod json;
pub mod limits;
pub mod listen;
pub mod model;
pub mod ollama_opts;
pub mod openai;
pub mod output;
pub mod policy;
pub mod route;
pub mod salvage;
pub mod scan;
pub mod tokens;
pub mod units;

pub use config::{Config, ConfigError, ConfigErrors, Sandbox, SandboxName, Upstream};
pub use listen::ListenAddr;
pub use model::{ModelName, ModelPattern};
pub use route::{EndpointClass, Route};
