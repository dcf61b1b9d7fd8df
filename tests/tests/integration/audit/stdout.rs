//! `[audit] path = "-"`: the records on the daemon's standard output (a container's log,
//! for the cluster's log shipper), with the ready lines between them; SIGHUP after the
//! privilege drop does not try to reopen it; `bridge-host audit --file -` reads that
//! output back. (deploy/kubernetes's overlay configures it.)

use bridge_tests::double::{Double, DoubleConfig};
use bridge_tests::harness::{bin, config, require_root, socket, Host};
use bridge_tests::http::{collect, req, send_unix};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_go_to_stdout_and_sighup_after_the_drop_keeps_them_there() {
    require_root("the daemon starts as root and drops its privileges, as in the DaemonSet");
    let double = Double::start(DoubleConfig::default()).await;
    let text = config(&double.url(), &[("a", "tokens_per_hour = 100000")], "")
        .replace("path = \"{dir}/audit.jsonl\"", "path = \"-\"");
    assert!(text.contains("path = \"-\"") && !text.contains("[privileges]"));
    let mut host = Host::start_exact(tempfile::tempdir().unwrap(), &text, &[]).await;
    host.wait_log("privileges dropped").await;
    host.wait_log("token budgets are kept in memory only").await;
    let sock = socket(&host, "a");
    let mut stdout = host.ready.clone();

    let (status, _, _) =
        collect(send_unix(&sock, req("GET", "/api/tags", "")).await.unwrap()).await;
    assert_eq!(status, 200);
    stdout.push(host.wait_line("{\"ts\"").await);

    host.signal(nix::sys::signal::Signal::SIGHUP);
    stdout.push(host.wait_line("reloaded configuration").await);
    host.wait_log("the audit log is standard output: nothing to reopen")
        .await;
    let (status, _, _) = collect(
        send_unix(&sock, req("GET", "/api/version", ""))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    stdout.push(host.wait_line("{\"ts\"").await);
    let log = host.log();
    assert!(!log.contains("reopen failed"), "{log}");
    // Nothing written beside a file named "-" in the daemon's working directory (ours).
    let cwd = std::env::current_dir().unwrap();
    for f in ["-", "-.budgets.json", "-.budgets.json.tmp"] {
        assert!(!cwd.join(f).exists(), "{f} in {}", cwd.display());
    }

    // The container log as a shipper gets it, read back with `bridge-host audit --file -`:
    // the ready and reload lines are skipped (named on stderr), the records are read.
    let mut cmd = tokio::process::Command::new(bin("bridge-host"));
    cmd.args(["audit", "--file", "-", "--json"])
        .stdin(std::process::Stdio::piped());
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all((stdout.join("\n") + "\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let recs: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let paths: Vec<&str> = recs.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/api/tags", "/api/version"], "{recs:?}");
    assert!(recs.iter().all(|r| r["sandbox"] == "a"), "{recs:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("<stdin>:1: skipped"), "{err}");
}
