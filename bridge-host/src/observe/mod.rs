//! What the daemon tells operators: the audit log writer and the metrics registry.

pub mod audit_log;
pub mod handoff_metrics;
pub mod metrics;
