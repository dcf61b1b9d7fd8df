//! Reading audit logs line by line (damaged lines are reported, never fatal) and
//! printing records, as JSON lines or readable lines.

use std::io::{self, BufRead, BufReader, Read, Write};

use protocol::audit::{AuditRecord, Decision};

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

pub fn write_records(out: &mut impl Write, records: &[AuditRecord], json: bool) -> io::Result<()> {
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
