//! The second half of the audit test: `bridge-host audit --summary` (table and JSON) and
//! its filters must agree with the records of the mixed log.

use std::collections::BTreeMap;
use std::process::Command;

use bridge_tests::harness::bin;
use serde_json::Value;

/// `bridge-host audit --summary` (table and JSON) and filters over the mixed log.
pub(super) fn summary_matches(log: &std::path::Path, records: &[Value]) {
    // The expectation, computed here from the records.
    #[derive(Default, Debug, PartialEq)]
    struct Row {
        requests: u64,
        denied: u64,
        errors: u64,
        prompt: u64,
        completion: u64,
        durations: Vec<u64>,
    }
    let mut want: BTreeMap<(String, String), Row> = BTreeMap::new();
    for r in records {
        let key = (
            r["sandbox"].as_str().unwrap().to_owned(),
            r["model"].as_str().unwrap_or("-").to_owned(),
        );
        let row = want.entry(key).or_default();
        row.requests += 1;
        if r["decision"] == "deny" {
            row.denied += 1;
        } else if r["status"].as_u64().unwrap() >= 400 || !r["reason"].is_null() {
            row.errors += 1;
        }
        row.prompt += r["prompt_tokens"].as_u64().unwrap_or(0);
        row.completion += r["completion_tokens"].as_u64().unwrap_or(0);
        row.durations.push(r["duration_ms"].as_u64().unwrap());
    }
    // Every record is minutes old at most: inside both token-budget windows, each
    // counting its counts, or the estimate charged instead.
    let mut windows: BTreeMap<String, u64> = BTreeMap::new();
    for r in records {
        let charged = r["tokens_estimated"].as_u64().unwrap_or_else(|| {
            r["prompt_tokens"].as_u64().unwrap_or(0) + r["completion_tokens"].as_u64().unwrap_or(0)
        });
        *windows
            .entry(r["sandbox"].as_str().unwrap().to_owned())
            .or_default() += charged;
    }
    let rank = |d: &[u64], p: usize| {
        let mut d = d.to_vec();
        d.sort_unstable();
        d[(p * d.len()).div_ceil(100).max(1) - 1]
    };
    let audit = |args: &[&str]| {
        let out = Command::new(bin("bridge-host"))
            .arg("audit")
            .arg("--file")
            .arg(log)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    let table = audit(&["--summary"]);
    let mut lines = table.lines();
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        head,
        [
            "SANDBOX",
            "MODEL",
            "REQUESTS",
            "DENIED",
            "ERRORS",
            "PROMPT_TOKENS",
            "COMPLETION_TOKENS",
            "P50_MS",
            "P95_MS"
        ],
        "{table}"
    );
    let mut got = Vec::new();
    for l in lines.by_ref() {
        if l.trim().is_empty() {
            break;
        }
        let c: Vec<&str> = l.split_whitespace().collect();
        got.push(c.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    }
    let total = got.pop().expect("a total row");
    assert_eq!(got.len(), want.len(), "{table}");
    for (row, ((sandbox, model), w)) in got.iter().zip(&want) {
        let nums = [
            w.requests,
            w.denied,
            w.errors,
            w.prompt,
            w.completion,
            rank(&w.durations, 50),
            rank(&w.durations, 95),
        ]
        .map(|n| n.to_string());
        let mut expect = vec![sandbox.clone(), model.clone()];
        expect.extend(nums);
        assert_eq!(row, &expect, "{table}");
    }
    // The expected groups are what the mix produced.
    assert_eq!(want[&("alpha".into(), "qwen2.5:7b".into())].requests, 2 * 3);
    assert_eq!(want[&("alpha".into(), "llama3.2:3b".into())].requests, 2);
    assert_eq!(want[&("beta".into(), "llama3.2:3b".into())].requests, 2 * 2);
    assert!(want[&("alpha".into(), "qwen2.5:7b".into())].prompt > 0);
    let all: Vec<u64> = want.values().flat_map(|w| w.durations.clone()).collect();
    assert_eq!(total[0], "TOTAL", "{table}");
    assert_eq!(
        total[1..],
        [
            records.len() as u64,
            want.values().map(|w| w.denied).sum(),
            want.values().map(|w| w.errors).sum(),
            want.values().map(|w| w.prompt).sum(),
            want.values().map(|w| w.completion).sum(),
            rank(&all, 50),
            rank(&all, 95),
        ]
        .map(|n| n.to_string()),
        "{table}"
    );

    // Then per sandbox, the tokens in the budgets' windows ending now.
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        head,
        ["SANDBOX", "TOKENS_LAST_HOUR", "TOKENS_LAST_DAY"],
        "{table}"
    );
    let got: Vec<Vec<String>> = lines
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    let expect: Vec<Vec<String>> = windows
        .iter()
        .map(|(s, n)| vec![s.clone(), n.to_string(), n.to_string()])
        .collect();
    assert_eq!(got, expect, "{table}");
    assert!(windows.values().any(|&n| n > 0), "{table}");

    // The same as JSON rows.
    let rows: Vec<Value> = audit(&["--summary", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), want.len());
    for (r, ((sandbox, model), w)) in rows.iter().zip(&want) {
        assert_eq!(r["sandbox"], sandbox.as_str());
        assert_eq!(r["model"], model.as_str());
        assert_eq!(r["requests"], w.requests);
        assert_eq!(r["p95_ms"], rank(&w.durations, 95));
    }
    for (sandbox, n) in &windows {
        let sum: u64 = rows
            .iter()
            .filter(|r| r["sandbox"] == sandbox.as_str())
            .map(|r| r["tokens_last_hour"].as_u64().unwrap())
            .sum();
        assert_eq!(sum, *n, "{sandbox}");
    }

    // Filters.
    let count = |args: &[&str]| audit(args).lines().count();
    let denied = records.iter().filter(|r| r["decision"] == "deny").count();
    assert_eq!(count(&["--denied", "--json"]), denied);
    assert_eq!(count(&["--allowed", "--json"]), records.len() - denied);
    assert_eq!(
        count(&["--sandbox", "beta", "--reason", "model_not_allowed"]),
        2
    );
    assert_eq!(count(&["--status", "431", "--json"]), 2);
    assert_eq!(count(&["--model", "llama3.2:1b"]), 2);
}
