//! The integration tests of ollama-bridge: one test binary (it links once), a module per
//! area, sharing the helpers of the test library (`bridge_tests`). They start the real
//! `bridge-host` and `bridge-guest` binaries, which `cargo test --workspace` builds first;
//! `cargo test -p ollama-bridge-tests` refuses binaries older than their sources.
//!
//! Run one area with a name filter, e.g.
//! `cargo test -p ollama-bridge-tests --test integration -- chain::`.

mod audit;
mod audit_durability;
mod bench_smoke;
mod big_bodies;
mod budgets;
mod chain;
mod clients;
mod clients_openclaw;
mod clients_salvage;
mod completions_man;
mod deploy;
mod doctor;
mod early_headers;
mod fair_queue;
mod framing;
mod handoff;
mod handoff_hostile;
mod hostile;
mod kubernetes;
mod limits;
mod limits_body_buffer;
mod limits_memory;
mod load_options;
mod metrics;
mod monitor;
mod multi_server;
mod num_ctx;
mod openai;
mod openai_completions;
mod openai_errors;
mod openai_fields;
mod policy;
mod preload;
mod privileges;
mod quick_start;
mod reload;
mod salvage;
mod sandbox_e2e;
mod socket_dirs;
mod status;
mod vsock;
