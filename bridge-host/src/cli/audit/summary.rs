//! `bridge-host audit --summary`: a row per sandbox × model with counts, tokens and
//! latency percentiles; then, per sandbox, the tokens in the token budgets' windows
//! (the last hour, the last day) as the budgets count them.

use std::collections::BTreeMap;
use std::io::{self, Write};

use protocol::audit::{parse_rfc3339_millis, AuditRecord, Decision};
use protocol::budget::{Usage, Window};

/// One row of the summary.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Row {
    pub sandbox: String,
    pub model: String,
    pub requests: u64,
    pub denied: u64,
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub p50_ms: u64,
    pub p95_ms: u64,
    /// Tokens of its requests that ended in the last hour and the last day, counted as
    /// the budgets count them (`tokens_estimated` when an answer was cut off).
    pub tokens_last_hour: u64,
    pub tokens_last_day: u64,
}

/// What a record cost a budget: Ollama's counts, or the estimate charged instead.
fn charged(r: &AuditRecord) -> u64 {
    r.tokens_estimated.unwrap_or_else(|| {
        r.prompt_tokens
            .unwrap_or(0)
            .saturating_add(r.completion_tokens.unwrap_or(0))
    })
}

/// When a record's request ended (unix seconds), where its time reads.
fn ended(r: &AuditRecord) -> Option<u64> {
    let ms = u64::try_from(parse_rfc3339_millis(&r.ts)?).ok()?;
    Some(ms.saturating_add(r.duration_ms) / 1000)
}

/// Tokens per sandbox in the budgets' windows ending at `now`: (sandbox, hour, day).
pub fn windows(records: &[AuditRecord], now: u64) -> Vec<(String, u64, u64)> {
    let mut per: BTreeMap<&str, Usage> = BTreeMap::new();
    for r in records {
        if let Some(t) = ended(r) {
            per.entry(&r.sandbox).or_default().charge(t, charged(r));
        }
    }
    per.into_iter()
        .map(|(s, u)| {
            let (h, d) = (u.used(Window::Hour, now), u.used(Window::Day, now));
            (s.to_owned(), h, d)
        })
        .collect()
}

/// Groups records per sandbox × model (token windows ending now).
pub fn summarise(records: &[AuditRecord]) -> Vec<Row> {
    summarise_at(records, crate::os::clock::unix_secs())
}

/// Groups records per sandbox × model, token windows ending at `now`.
pub fn summarise_at(records: &[AuditRecord], now: u64) -> Vec<Row> {
    let mut groups: BTreeMap<(String, String), (Row, Vec<u64>)> = BTreeMap::new();
    let mut usage: BTreeMap<(String, String), Usage> = BTreeMap::new();
    for r in records {
        let model = r.model.clone().unwrap_or_else(|| "-".into());
        let (row, durs) = groups
            .entry((r.sandbox.clone(), model.clone()))
            .or_insert_with(|| {
                (
                    Row {
                        sandbox: r.sandbox.clone(),
                        model,
                        ..Row::default()
                    },
                    Vec::new(),
                )
            });
        row.requests += 1;
        if r.decision == Decision::Deny {
            row.denied += 1;
        } else if r.status >= 400 || r.reason.is_some() {
            row.errors += 1;
        }
        // Counts come from Ollama (or a damaged file): saturate, never overflow.
        row.prompt_tokens = row
            .prompt_tokens
            .saturating_add(r.prompt_tokens.unwrap_or(0));
        row.completion_tokens = row
            .completion_tokens
            .saturating_add(r.completion_tokens.unwrap_or(0));
        durs.push(r.duration_ms);
        if let Some(t) = ended(r) {
            let key = (r.sandbox.clone(), row.model.clone());
            usage.entry(key).or_default().charge(t, charged(r));
        }
    }
    groups
        .into_iter()
        .map(|(key, (mut row, mut d))| {
            d.sort_unstable();
            row.p50_ms = percentile(&d, 50);
            row.p95_ms = percentile(&d, 95);
            if let Some(u) = usage.get(&key) {
                row.tokens_last_hour = u.used(Window::Hour, now);
                row.tokens_last_day = u.used(Window::Day, now);
            }
            row
        })
        .collect()
}

fn saturating_sum(values: impl Iterator<Item = u64>) -> u64 {
    values.fold(0, u64::saturating_add)
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], p: u64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as u64).div_ceil(100).max(1) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

pub fn write_summary(out: &mut impl Write, records: &[AuditRecord], json: bool) -> io::Result<()> {
    let rows = summarise(records);
    if json {
        for r in &rows {
            serde_json::to_writer(&mut *out, r)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    let mut durs: Vec<u64> = records.iter().map(|r| r.duration_ms).collect();
    durs.sort_unstable();
    let total = Row {
        sandbox: "TOTAL".into(),
        model: String::new(),
        requests: rows.iter().map(|r| r.requests).sum(),
        denied: rows.iter().map(|r| r.denied).sum(),
        errors: rows.iter().map(|r| r.errors).sum(),
        prompt_tokens: saturating_sum(rows.iter().map(|r| r.prompt_tokens)),
        completion_tokens: saturating_sum(rows.iter().map(|r| r.completion_tokens)),
        p50_ms: percentile(&durs, 50),
        p95_ms: percentile(&durs, 95),
        ..Row::default()
    };
    let sw = rows
        .iter()
        .map(|r| r.sandbox.len())
        .chain([7])
        .max()
        .unwrap_or(7);
    let mw = rows
        .iter()
        .map(|r| r.model.len())
        .chain([5])
        .max()
        .unwrap_or(5);
    let line = |out: &mut dyn Write, c: [&dyn std::fmt::Display; 9]| {
        writeln!(
            out,
            "{:<sw$}  {:<mw$}  {:>8}  {:>6}  {:>6}  {:>13}  {:>17}  {:>7}  {:>7}",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
        )
    };
    line(
        out,
        [
            &"SANDBOX",
            &"MODEL",
            &"REQUESTS",
            &"DENIED",
            &"ERRORS",
            &"PROMPT_TOKENS",
            &"COMPLETION_TOKENS",
            &"P50_MS",
            &"P95_MS",
        ],
    )?;
    for r in rows.iter().chain([&total]) {
        line(
            out,
            [
                &r.sandbox,
                &r.model,
                &r.requests,
                &r.denied,
                &r.errors,
                &r.prompt_tokens,
                &r.completion_tokens,
                &r.p50_ms,
                &r.p95_ms,
            ],
        )?;
    }
    write_windows(out, records, sw)
}

/// The second table: per sandbox, the tokens in the budgets' windows ending now.
fn write_windows(out: &mut impl Write, records: &[AuditRecord], sw: usize) -> io::Result<()> {
    let rows = windows(records, crate::os::clock::unix_secs());
    writeln!(out)?;
    writeln!(
        out,
        "{:<sw$}  {:>16}  {:>15}",
        "SANDBOX", "TOKENS_LAST_HOUR", "TOKENS_LAST_DAY"
    )?;
    for (s, h, d) in rows {
        writeln!(out, "{s:<sw$}  {h:>16}  {d:>15}")?;
    }
    Ok(())
}
