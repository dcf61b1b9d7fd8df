//! `bridge-host audit`: reads audit logs for operators (files, or standard input as
//! `-`), filters, prints records or a summary per sandbox × model, or follows a live
//! log across rotation. Damaged lines are skipped and reported by line, never fatal.

pub mod follow;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

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

/// Reads records from one source, reporting skipped lines on stderr.
pub fn read_records(name: &str, r: impl Read, out: &mut Vec<AuditRecord>) -> usize {
    let mut skipped = 0;
    let mut reader = BufReader::new(r);
    let mut line = Vec::new();
    let mut n = 0u64;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("{name}: read error after line {n}: {e}");
                break;
            }
        }
        n += 1;
        match parse_line(name, n, &line) {
            Line::Record(r) => out.push(*r),
            Line::Blank => {}
            Line::Damaged => skipped += 1,
        }
    }
    skipped
}

/// One line of a log.
pub enum Line {
    Record(Box<AuditRecord>),
    Blank,
    /// Not a record; already reported on stderr with its line number.
    Damaged,
}

/// Parses line `n` of `name` (with its newline, if it has one).
pub fn parse_line(name: &str, n: u64, line: &[u8]) -> Line {
    let text = line.strip_suffix(b"\n").unwrap_or(line);
    if text.iter().all(u8::is_ascii_whitespace) {
        return Line::Blank;
    }
    match serde_json::from_slice::<AuditRecord>(text) {
        Ok(r) => Line::Record(Box::new(r)),
        Err(e) => {
            let partial = if line.ends_with(b"\n") {
                ""
            } else {
                " (partial last line)"
            };
            eprintln!("{name}:{n}: skipped{partial}: {e}");
            Line::Damaged
        }
    }
}

/// Runs the subcommand.
pub fn run(args: AuditArgs) -> ExitCode {
    let files = if args.files.is_empty() {
        let path = match &args.config {
            Some(c) => match crate::cli::load_config(c) {
                Ok(cfg) => cfg.audit.path,
                Err(e) => {
                    eprintln!("{}: {e}", c.display());
                    return ExitCode::from(crate::cli::EXIT_CONFIG);
                }
            },
            None => {
                protocol::Config::builtin(&crate::cli::defaults_env())
                    .audit
                    .path
            }
        };
        vec![path]
    } else {
        args.files.clone()
    };
    if args.follow {
        let [file] = files.as_slice() else {
            eprintln!("bridge-host audit: --follow reads exactly one file (or -)");
            return ExitCode::from(crate::cli::EXIT_CONFIG);
        };
        return crate::cli::audit::follow::run(file, &args);
    }
    let mut records = Vec::new();
    let mut skipped = 0;
    for f in &files {
        if f.as_os_str() == "-" {
            skipped += read_records("<stdin>", io::stdin().lock(), &mut records);
            continue;
        }
        match std::fs::File::open(f) {
            Ok(file) => skipped += read_records(&f.display().to_string(), file, &mut records),
            Err(e) => {
                eprintln!("bridge-host audit: cannot open {}: {e}", f.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let filter = Filter(&args);
    records.retain(|r| filter.keep(r));
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let res = if args.summary {
        write_summary(&mut out, &records, args.json)
    } else {
        write_records(&mut out, &records, args.json)
    };
    if skipped > 0 {
        eprintln!("bridge-host audit: {skipped} damaged line(s) skipped");
    }
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bridge-host audit: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_records(out: &mut impl Write, records: &[AuditRecord], json: bool) -> io::Result<()> {
    for r in records {
        write_record(out, r, json)?;
    }
    Ok(())
}

/// Prints one record: its JSON line, or a readable line.
pub fn write_record(out: &mut impl Write, r: &AuditRecord, json: bool) -> io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, r)?;
        return writeln!(out);
    }
    writeln!(
        out,
        "{} {} {:<12} {:<6} {:<22} {:<24} {:<5} {} {}ms{}",
        r.ts,
        r.request_id,
        r.sandbox,
        r.method,
        r.path,
        r.model.as_deref().unwrap_or("-"),
        match r.decision {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        },
        r.status,
        r.duration_ms,
        r.reason
            .map(|x| format!(" {}", x.as_str()))
            .unwrap_or_default(),
    )
}

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
}

/// Groups records per sandbox × model.
pub fn summarise(records: &[AuditRecord]) -> Vec<Row> {
    let mut groups: BTreeMap<(String, String), (Row, Vec<u64>)> = BTreeMap::new();
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
    }
    groups
        .into_values()
        .map(|(mut row, mut d)| {
            d.sort_unstable();
            row.p50_ms = percentile(&d, 50);
            row.p95_ms = percentile(&d, 95);
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

fn write_summary(out: &mut impl Write, records: &[AuditRecord], json: bool) -> io::Result<()> {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 95), 95);
        assert_eq!(percentile(&[7], 95), 7);
        assert_eq!(percentile(&[], 50), 0);
    }

    #[test]
    fn damaged_lines_are_skipped() {
        let good = r#"{"ts":"2026-11-21T14:03:07.123Z","request_id":"r1","sandbox":"a","peer":null,"method":"GET","path":"/api/tags","endpoint":"list","model":null,"decision":"allow","reason":null,"num_ctx_requested":null,"num_ctx_sent":null,"status":200,"bytes_in":0,"bytes_out":10,"duration_ms":3,"prompt_tokens":null,"completion_tokens":null}"#;
        let text = format!("{good}\nnot json\n\n{good}\n{{\"ts\":\"2026");
        let mut out = Vec::new();
        let skipped = read_records("t", text.as_bytes(), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(skipped, 2);
    }

    #[test]
    fn huge_token_counts_saturate_instead_of_overflowing() {
        let line = r#"{"ts":"2026-11-21T14:03:07.123Z","request_id":"r1","sandbox":"a","peer":null,"method":"POST","path":"/api/chat","endpoint":"chat","model":"m:latest","decision":"allow","reason":null,"num_ctx_requested":null,"num_ctx_sent":null,"status":200,"bytes_in":0,"bytes_out":10,"duration_ms":3,"prompt_tokens":18446744073709551615,"completion_tokens":18446744073709551615}"#;
        let mut recs = Vec::new();
        let text = format!(
            "{line}\n{}\n",
            line.replace("\"sandbox\":\"a\"", "\"sandbox\":\"b\"")
        );
        assert_eq!(read_records("t", text.as_bytes(), &mut recs), 0);
        recs.push(recs[0].clone());
        let rows = summarise(&recs);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].prompt_tokens, u64::MAX);
        let mut out = Vec::new();
        write_summary(&mut out, &recs, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        let total = text.lines().find(|l| l.starts_with("TOTAL")).unwrap();
        assert!(total.contains(&u64::MAX.to_string()), "{total}");
    }
}
