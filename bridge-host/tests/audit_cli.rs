//! `bridge-host audit` on files as operators meet them: damaged and partial lines,
//! several files and standard input, and `--follow` across appends, rotation and
//! truncation.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

/// Guard against hanging: never an assertion about speed.
const GUARD: Duration = Duration::from_secs(60);

fn host() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bridge-host"))
}

fn record(id: &str, sandbox: &str) -> String {
    serde_json::json!({
        "ts": "2026-11-21T14:03:07.123Z", "request_id": id, "sandbox": sandbox,
        "peer": {"uid": 1000, "gid": 1000, "pid": 7}, "method": "POST", "path": "/api/chat",
        "endpoint": "chat", "model": "qwen2.5:7b", "decision": "allow", "reason": null,
        "num_ctx_requested": null, "num_ctx_sent": 8192, "status": 200, "bytes_in": 10,
        "bytes_out": 20, "duration_ms": 30, "prompt_tokens": 4, "completion_tokens": 5
    })
    .to_string()
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn damaged_and_partial_lines_are_skipped_and_named() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a.jsonl");
    let b = t.path().join("b.jsonl");
    std::fs::write(
        &a,
        format!(
            "{}\nnot json\n\n{}\n{{\"ts\":\"2026",
            record("r1", "x"),
            record("r2", "y")
        ),
    )
    .unwrap();
    std::fs::write(&b, format!("{}\n", record("r3", "x"))).unwrap();
    let mut child = host()
        .args(["audit", "--json", "--file"])
        .arg(&a)
        .arg("--file")
        .arg(&b)
        .args(["--file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{}\n{{}}\n", record("r4", "x")).as_bytes())
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let ids: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, ["r1", "r2", "r3", "r4"]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!("{}:2: skipped: ", a.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}:5: skipped (partial last line): ", a.display())),
        "{err}"
    );
    assert!(err.contains("<stdin>:2: skipped: "), "{err}");
    assert!(err.contains("3 damaged line(s) skipped"), "{err}");

    // Filters apply to every source; the summary counts only what passed.
    let out = host()
        .args(["audit", "--sandbox", "x", "--summary", "--json", "--file"])
        .arg(&a)
        .arg("--file")
        .arg(&b)
        .output()
        .unwrap();
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["requests"], 2);
    assert_eq!(rows[0]["prompt_tokens"], 8);
}

/// A running `audit --follow` with its output lines arriving on channels.
struct Follower {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
}

impl Follower {
    fn start(path: &Path, extra: &[&str]) -> Follower {
        let mut child = host()
            .args(["audit", "--follow", "--json", "--file"])
            .arg(path)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = |r: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = channel();
            std::thread::spawn(move || {
                for l in BufReader::new(r).lines() {
                    if tx.send(l.unwrap()).is_err() {
                        return;
                    }
                }
            });
            rx
        };
        let out = lines(Box::new(child.stdout.take().unwrap()));
        let err = lines(Box::new(child.stderr.take().unwrap()));
        Follower { child, out, err }
    }

    fn next_id(&self) -> String {
        let l = self
            .out
            .recv_timeout(GUARD)
            .expect("a record within the guard time");
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        v["request_id"].as_str().unwrap().to_owned()
    }

    /// Waits for a stderr line containing `what`; returns it.
    fn note(&self, what: &str) -> String {
        loop {
            let l = self
                .err
                .recv_timeout(GUARD)
                .unwrap_or_else(|_| panic!("no {what:?} on stderr"));
            if l.contains(what) {
                return l;
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn follow_reads_appends_partial_lines_rotation_and_truncation() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("audit.jsonl");
    append(&f, &format!("{}\n", record("r1", "a")));
    // --since reads what is there; filters apply as records arrive.
    let fw = Follower::start(&f, &["--since", "2000-01-01T00:00:00Z", "--sandbox", "a"]);
    assert_eq!(fw.next_id(), "r1");

    // A line written in two parts is printed once it is whole.
    let r2 = record("r2", "a");
    let (head, tail) = r2.split_at(40);
    append(&f, head);
    append(&f, &format!("{tail}\n"));
    assert_eq!(fw.next_id(), "r2");
    // Another sandbox's record is filtered out.
    append(
        &f,
        &format!("{}\n{}\n", record("other", "b"), record("r3", "a")),
    );
    assert_eq!(fw.next_id(), "r3");

    // logrotate: rename; the daemon writes to the old file until SIGHUP, then a new
    // file appears at the path.
    let old = t.path().join("audit.jsonl.1");
    std::fs::rename(&f, &old).unwrap();
    append(&old, &format!("{}\n", record("r4", "a")));
    append(
        &f,
        &format!("{}\n{}\n", record("r5", "a"), record("r6", "a")),
    );
    assert_eq!(fw.next_id(), "r4");
    assert_eq!(fw.next_id(), "r5");
    assert_eq!(fw.next_id(), "r6");
    fw.note("rotated; following the new file");

    // copytruncate: the file shrinks under the reader.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&f, &format!("{}\n", record("r7", "a")));
    assert_eq!(fw.next_id(), "r7");
    fw.note("truncated; reading from the start");

    // A damaged line is reported and skipped; following goes on.
    append(&f, &format!("garbage\n{}\n", record("r8", "a")));
    assert_eq!(fw.next_id(), "r8");
    let skipped = fw.note("skipped");
    assert!(
        skipped.contains(&format!("{}:2: skipped", f.display())),
        "{skipped}"
    );
}

#[test]
fn follow_starts_at_the_end_without_since() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("audit.jsonl");
    append(
        &f,
        &format!("{}\n{}\n", record("old1", "a"), record("old2", "a")),
    );
    let fw = Follower::start(&f, &[]);
    let note = fw.note("following from line");
    assert!(note.ends_with("following from line 3"), "{note}");
    append(&f, &format!("{}\n", record("new", "a")));
    assert_eq!(fw.next_id(), "new");
}

#[test]
fn follow_waits_for_a_file_that_does_not_exist_yet() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("later.jsonl");
    let fw = Follower::start(&f, &[]);
    fw.note("does not exist yet; waiting for it");
    append(&f, &format!("{}\n", record("first", "a")));
    // A file that appears is read from its start.
    fw.note("following from line 1");
    assert_eq!(fw.next_id(), "first");
}

#[test]
fn the_logrotate_example_rotates_the_example_configs_audit_log_and_signals_hup() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let conf = std::fs::read_to_string(root.join("deploy/logrotate/ollama-bridge")).unwrap();
    let bridge = std::fs::read_to_string(root.join("deploy/config/bridge.toml")).unwrap();
    let path = bridge
        .lines()
        .find_map(|l| l.trim().strip_prefix("path = \""))
        .and_then(|p| p.split('"').next())
        .expect("[audit].path in the example config");
    assert!(conf.contains(&format!("\n{path} {{")), "{conf}");
    let post = conf
        .split("postrotate")
        .nth(1)
        .and_then(|p| p.split("endscript").next())
        .expect("a postrotate script");
    assert!(
        post.contains("systemctl kill -s HUP") && post.contains("kill -HUP"),
        "{post}"
    );
    // The daemon creates the new file itself (its owner, mode 0640).
    assert!(conf.lines().any(|l| l.trim() == "nocreate"), "{conf}");
}
