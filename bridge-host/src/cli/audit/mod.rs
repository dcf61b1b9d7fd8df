//! `bridge-host audit`: reads audit logs for operators (files, or standard input as
//! `-`), filters, prints records or a summary per sandbox × model, or follows a live
//! log across rotation. Damaged lines are skipped and reported by line, never fatal.

mod args;
mod follow;
mod records;
mod summary;

use std::io;
use std::process::ExitCode;

pub use args::AuditArgs;
use args::Filter;
use records::{read_records, write_records};
use summary::write_summary;

use crate::cli::config::{defaults_env, load_config, EXIT_CONFIG};

/// Runs the subcommand.
pub fn run(args: AuditArgs) -> ExitCode {
    let files = if args.files.is_empty() {
        let path = match &args.config {
            Some(c) => match load_config(c) {
                Ok(cfg) => cfg.audit.path,
                Err(e) => {
                    eprintln!("{}: {e}", c.display());
                    return ExitCode::from(EXIT_CONFIG);
                }
            },
            None => protocol::Config::builtin(&defaults_env()).audit.path,
        };
        vec![path]
    } else {
        args.files.clone()
    };
    if args.follow {
        let [file] = files.as_slice() else {
            eprintln!("bridge-host audit: --follow reads exactly one file (or -)");
            return ExitCode::from(EXIT_CONFIG);
        };
        return follow::run(file, &args);
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

#[cfg(test)]
mod tests {
    use super::records::*;
    use super::summary::*;

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

    #[test]
    fn token_windows_count_as_the_budgets_do() {
        let line = r#"{"ts":"2026-11-21T14:03:07.123Z","request_id":"r1","sandbox":"a","peer":null,"method":"POST","path":"/api/chat","endpoint":"chat","model":"m:latest","decision":"allow","reason":null,"num_ctx_requested":null,"num_ctx_sent":null,"status":200,"bytes_in":0,"bytes_out":10,"duration_ms":3000,"prompt_tokens":10,"completion_tokens":20}"#;
        let cut = line
            .replace("\"ts\":\"2026-11-21T14:03", "\"ts\":\"2026-11-21T15:30")
            .replace(
                "\"completion_tokens\":20",
                "\"completion_tokens\":null,\"tokens_estimated\":7",
            );
        let mut recs = Vec::new();
        let text = format!("{line}\n{cut}\n");
        assert_eq!(read_records("t", text.as_bytes(), &mut recs), 0);
        // 2026-11-21T15:40:00Z: the first ended 14:03:10 (outside the hour), the cut one
        // counts its estimate.
        let now = (protocol::audit::parse_rfc3339_millis("2026-11-21T15:40:00.000Z").unwrap()
            / 1000) as u64;
        assert_eq!(windows(&recs, now), [("a".to_owned(), 7, 37)]);
        let rows = summarise_at(&recs, now);
        assert_eq!((rows[0].tokens_last_hour, rows[0].tokens_last_day), (7, 37));
        assert_eq!(windows(&recs, now + 86_400), [("a".to_owned(), 0, 0)]);
    }
}
