//! The arguments of `bridge-host audit` and the filter they make.

use std::path::PathBuf;

use clap::Args;
use protocol::audit::{parse_rfc3339_millis, AuditRecord, Decision};

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Audit log(s) to read; `-` is standard input [default: the configured or built-in path].
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Read the audit path from this configuration file.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Only this sandbox.
    #[arg(long, value_name = "NAME")]
    pub sandbox: Option<String>,
    /// Only this model (canonical, e.g. qwen2.5:7b).
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Only denied requests.
    #[arg(long, conflicts_with = "allowed")]
    pub denied: bool,
    /// Only allowed requests.
    #[arg(long)]
    pub allowed: bool,
    /// Only records with this reason code (e.g. model_not_allowed, upstream_timeout).
    #[arg(long, value_name = "CODE")]
    pub reason: Option<String>,
    /// Only this HTTP status.
    #[arg(long, value_name = "CODE")]
    pub status: Option<u16>,
    /// Only records at or after this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    pub since: Option<i64>,
    /// Only records before this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    pub until: Option<i64>,
    /// Print matching records as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Print a table per sandbox and model instead of records.
    #[arg(long)]
    pub summary: bool,
    /// Keep reading as records are appended, across logrotate's rename or truncation
    /// (one file). Starts at the end of the file unless --since is given.
    #[arg(long, conflicts_with = "summary")]
    pub follow: bool,
}

fn parse_time(s: &str) -> Result<i64, String> {
    parse_rfc3339_millis(s)
        .ok_or_else(|| format!("{s:?} is not an RFC 3339 time, e.g. 2026-11-21T14:00:00Z"))
}

/// Filters records.
pub struct Filter<'a>(pub &'a AuditArgs);

impl Filter<'_> {
    pub fn keep(&self, r: &AuditRecord) -> bool {
        let a = self.0;
        if a.sandbox.as_deref().is_some_and(|s| s != r.sandbox) {
            return false;
        }
        if a.model
            .as_deref()
            .is_some_and(|m| Some(m) != r.model.as_deref())
        {
            return false;
        }
        if a.denied && r.decision != Decision::Deny {
            return false;
        }
        if a.allowed && r.decision != Decision::Allow {
            return false;
        }
        if a.reason
            .as_deref()
            .is_some_and(|c| Some(c) != r.reason.map(|x| x.as_str()))
        {
            return false;
        }
        if a.status.is_some_and(|s| s != r.status) {
            return false;
        }
        if a.since.is_some() || a.until.is_some() {
            let Some(t) = parse_rfc3339_millis(&r.ts) else {
                return false;
            };
            if a.since.is_some_and(|s| t < s) || a.until.is_some_and(|u| t >= u) {
                return false;
            }
        }
        true
    }
}
