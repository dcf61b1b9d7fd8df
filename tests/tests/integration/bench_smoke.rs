//! The benchmark (src/bin/bench) still runs: a `--quick` run over the direct and the
//! bridge paths (relay and hand-off) must finish, print its tables and write JSON that holds every section.
//! Nothing here is about speed: timings are never asserted.

use std::process::Command;

use bridge_tests::harness;

#[test]
fn quick_bench_runs_every_section() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.json");
    // The bench starts bridge-host from the bin dir itself: refuse a stale one here.
    harness::bin("bridge-host");
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args([
            "--quick",
            "--paths",
            "direct,bridge,bridge-handoff",
            "--bin-dir",
        ])
        .arg(harness::bin_dir())
        .arg("--guest-bin")
        .arg(harness::guest_bin())
        .arg("--out")
        .arg(&json)
        .output()
        .expect("run the bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("### Targets"), "{stdout}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for section in ["requests", "streams", "big"] {
        let cells = v[section].as_array().unwrap();
        for path in ["bridge", "bridge-handoff"] {
            assert!(
                cells.iter().any(|c| c["path"] == path),
                "no {path} cell in {section}: {v}"
            );
        }
    }
    for c in v["requests"].as_array().unwrap() {
        assert_eq!(c["errors"], 0, "{c}");
    }
    for c in v["streams"].as_array().unwrap() {
        assert_eq!(c["errors"], 0, "{c}");
        assert!(c["chunks"].as_u64().unwrap() > 0, "{c}");
    }
    assert!(v["mem"]["host_streams_kib"].as_u64().unwrap() > 0, "{v}");
}
