//! `bridge-host audit --follow`: prints records as they are appended to a live log, like
//! `tail -F`: across logrotate's rename (a new file appears at the path) and truncation
//! (`copytruncate`), holding a partial line until its newline arrives.

use std::fs::File;
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::args::{AuditArgs, Filter};
use super::records::{parse_line, write_record, Line};

/// How often the file is looked at when there is nothing new.
const POLL: Duration = Duration::from_millis(200);
/// After a new file appears at the path, the old one is still read until it has been
/// quiet this long (the daemon writes to it until it reopens on SIGHUP).
const SETTLE: Duration = Duration::from_secs(1);

/// Follows `path` (`-`: standard input) until killed or until stdout is closed.
pub fn run(path: &Path, args: &AuditArgs) -> ExitCode {
    let res = if path.as_os_str() == "-" {
        follow_stdin(args)
    } else {
        follow_file(path, args)
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bridge-host audit: {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// Splits bytes into lines and prints the records that pass the filter.
struct Lines<'a> {
    name: String,
    n: u64,
    partial: Vec<u8>,
    args: &'a AuditArgs,
}

impl Lines<'_> {
    fn feed(&mut self, mut data: &[u8], out: &mut impl Write) -> io::Result<()> {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&data[..=nl]);
            let line = std::mem::take(&mut self.partial);
            self.line(&line, out)?;
            data = &data[nl + 1..];
        }
        self.partial.extend_from_slice(data);
        Ok(())
    }

    /// The file ends here for good (rotated away): a last line without newline counts.
    fn end(&mut self, out: &mut impl Write) -> io::Result<()> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, out)?;
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8], out: &mut impl Write) -> io::Result<()> {
        self.n += 1;
        if let Line::Record(r) = parse_line(&self.name, self.n, line) {
            if Filter(self.args).keep(&r) {
                write_record(out, &r, self.args.json)?;
            }
        }
        Ok(())
    }
}

fn follow_stdin(args: &AuditArgs) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut lines = Lines {
        name: "<stdin>".into(),
        n: 0,
        partial: Vec::new(),
        args,
    };
    let mut input = io::stdin().lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            lines.end(&mut out)?;
            return out.flush();
        }
        lines.feed(&buf, &mut out)?;
        out.flush()?;
    }
}

/// One open generation of the file.
struct Open<'a> {
    file: File,
    id: (u64, u64),
    pos: u64,
    lines: Lines<'a>,
}

impl<'a> Open<'a> {
    fn new(path: &Path, args: &'a AuditArgs, from_start: bool) -> io::Result<Open<'a>> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let mut lines = Lines {
            name: path.display().to_string(),
            n: 0,
            partial: Vec::new(),
            args,
        };
        let mut pos = 0;
        if !from_start {
            // Skip the whole lines already there (counting them, for line numbers).
            let mut buf = vec![0u8; 64 * 1024];
            let mut offset = 0u64;
            loop {
                let k = file.read(&mut buf)?;
                if k == 0 {
                    break;
                }
                for (i, &b) in buf[..k].iter().enumerate() {
                    if b == b'\n' {
                        lines.n += 1;
                        pos = offset + i as u64 + 1;
                    }
                }
                offset += k as u64;
            }
        }
        Ok(Open {
            file,
            id: (meta.dev(), meta.ino()),
            pos,
            lines,
        })
    }

    /// Reads whatever was appended; true when there was something.
    fn pump(&mut self, out: &mut impl Write) -> io::Result<bool> {
        let len = self.file.metadata()?.len();
        if len < self.pos {
            eprintln!("{}: truncated; reading from the start", self.lines.name);
            self.pos = 0;
            self.lines.partial.clear();
            self.lines.n = 0;
        }
        self.file.seek(SeekFrom::Start(self.pos))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut any = false;
        loop {
            let k = self.file.read(&mut buf)?;
            if k == 0 {
                break;
            }
            any = true;
            self.pos += k as u64;
            self.lines.feed(&buf[..k], out)?;
        }
        Ok(any)
    }
}

fn follow_file(path: &Path, args: &AuditArgs) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut waited = false;
    let first = loop {
        // A file that appears after we started is new from its first line.
        match Open::new(path, args, waited || args.since.is_some()) {
            Ok(o) => break o,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !waited {
                    eprintln!("{}: does not exist yet; waiting for it", path.display());
                    waited = true;
                }
                std::thread::sleep(POLL);
            }
            Err(e) => return Err(e),
        }
    };
    eprintln!(
        "{}: following from line {}",
        path.display(),
        first.lines.n + 1
    );
    let mut cur = first;
    // When a new file appeared at the path: since when, and since when the old is quiet.
    let mut rotated: Option<Instant> = None;
    loop {
        let any = cur.pump(&mut out)?;
        out.flush()?;
        let moved = match std::fs::metadata(path) {
            Ok(m) => (m.dev(), m.ino()) != cur.id,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if !moved {
            rotated = None;
        } else if any || rotated.is_none() {
            rotated = Some(Instant::now());
        } else if rotated.is_some_and(|t| t.elapsed() >= SETTLE) {
            cur.lines.end(&mut out)?;
            eprintln!("{}: rotated; following the new file", path.display());
            // Every line of a file that replaces the old one is new.
            cur = Open::new(path, args, true)?;
            rotated = None;
            continue;
        }
        if !any {
            std::thread::sleep(POLL);
        }
    }
}
