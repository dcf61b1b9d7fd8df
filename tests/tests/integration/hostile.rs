//! The hostile-request corpus (tests/fixtures/hostile): every request goes over a real
//! sandbox socket to the real daemon. A refused case must get its expected refusal with
//! nothing reaching Ollama; a rewritten case (`# forwarded: JSON`) must be answered and
//! Ollama must have received exactly that body. A control request at the end proves the
//! path to Ollama was open.

use std::path::{Path, PathBuf};

use bridge_tests::double::{Double, DoubleConfig, DoubleModel};
use bridge_tests::harness::{config, repo, socket, Host};
use bridge_tests::http::{raw_unix, RawResponse};

struct Case {
    name: String,
    expect: Vec<Option<u16>>,
    bytes: Vec<u8>,
    /// For a rewritten case: the body Ollama must receive.
    forwarded: Option<serde_json::Value>,
}

fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'r' => {
                    out.push(b'\r');
                    i += 2;
                    continue;
                }
                b'n' => {
                    out.push(b'\n');
                    i += 2;
                    continue;
                }
                b'x' if i + 3 < b.len() => {
                    if let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16) {
                        out.push(v);
                        i += 4;
                        continue;
                    }
                }
                _ => {}
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn load(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).unwrap();
    let mut expect = Vec::new();
    let mut escapes = false;
    let mut forwarded = None;
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next_if(|l| l.starts_with("# ")) {
        if let Some(e) = l.strip_prefix("# expect: ") {
            expect = e
                .split('|')
                .map(|s| {
                    if s == "close" {
                        None
                    } else {
                        Some(s.parse().unwrap())
                    }
                })
                .collect();
        }
        if let Some(f) = l.strip_prefix("# forwarded: ") {
            let v = serde_json::from_str(f)
                .unwrap_or_else(|e| panic!("{}: # forwarded is not JSON: {e}", path.display()));
            forwarded = Some(v);
        }
        escapes |= l == "# escapes: on";
    }
    let rest: Vec<&str> = lines.collect();
    let (head, body) = match rest.iter().position(|l| l.is_empty()) {
        Some(p) => (&rest[..p], Some(rest[p + 1..].join("\n"))),
        None => (&rest[..], None),
    };
    let conv = |s: &str| {
        if escapes {
            unescape(s)
        } else {
            s.as_bytes().to_vec()
        }
    };
    let body = body.map(|b| conv(&b)).unwrap_or_default();
    let mut bytes = Vec::new();
    for h in head {
        let h = h.replace(
            "Content-Length: auto",
            &format!("Content-Length: {}", body.len()),
        );
        bytes.extend(conv(&h));
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend(body);
    assert!(!expect.is_empty(), "{}: no # expect line", path.display());
    Case {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        expect,
        bytes,
        forwarded,
    }
}

fn corpus() -> Vec<Case> {
    let dir = repo().join("tests/fixtures/hostile");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "http"))
        .collect();
    files.sort();
    files.iter().map(|p| load(p)).collect()
}

fn describe(r: &Option<RawResponse>) -> String {
    match r {
        None => "connection closed".into(),
        Some(r) => format!("{} {}", r.status, String::from_utf8_lossy(&r.body)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus_is_refused_and_nothing_reaches_ollama() {
    let cases = corpus();
    assert!(cases.len() >= 40, "the corpus has {} requests", cases.len());
    // llama3.2:1b, which has a keep_alive_max of its own, is one more model Ollama has.
    let mut models = DoubleConfig::default();
    models.models.push(DoubleModel {
        name: "llama3.2:1b".into(),
        context_length: 131072,
        embedding: false,
    });
    let double = Double::start(models).await;
    let host = Host::start(&config(
        &double.url(),
        &[(
            "corpus",
            "models = [\"qwen2.5:7b\", \"llama3.2:*\"]\nmax_body = \"4KiB\"",
        )],
        "[model.\"llama3.2:*\"]\nnum_ctx_max = 16384\n\n[model.\"llama3.2:1b\"]\nkeep_alive_max = \"10m\"\n\n[model.\"qwen2.5:7b\"]\nkeep_alive = \"30m\"\noptions = { num_gpu = 99 }\n",
    ))
    .await;
    let sock = socket(&host, "corpus");
    let mut failures = Vec::new();
    for c in &cases {
        double.clear();
        let got = raw_unix(&sock, &c.bytes).await.unwrap_or(None);
        if let Some(want) = &c.forwarded {
            let reached = double.requests();
            let body = reached
                .first()
                .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body));
            match (got.as_ref().map(|r| r.status), reached.len(), body) {
                (Some(200), 1, Some(Ok(b))) if &b == want => {}
                (status, n, body) => failures.push(format!(
                    "{}: want 200 and Ollama receiving {want}, got {status:?} and {n} request(s): {body:?}",
                    c.name
                )),
            }
            continue;
        }
        if !double.requests().is_empty() {
            failures.push(format!("{}: reached Ollama", c.name));
        }
        let status = got.as_ref().map(|r| r.status);
        if !c.expect.contains(&status) {
            failures.push(format!(
                "{}: want {:?}, got {}",
                c.name,
                c.expect,
                describe(&got)
            ));
            continue;
        }
        // Refusals the bridge writes itself say so; hyper's own 400s have no body.
        if let Some(r) = got.as_ref().filter(|_| !c.bytes.starts_with(b"HEAD ")) {
            if !r.body.is_empty() || r.status != 400 {
                let text = String::from_utf8_lossy(&r.body);
                if r.status != 431 && !text.contains("ollama-bridge: ") {
                    failures.push(format!(
                        "{}: {} without the bridge's message: {text}",
                        c.name, r.status
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Control: an allowed request on the same socket does reach Ollama.
    double.clear();
    let ok = b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let r = raw_unix(&sock, ok).await.unwrap().expect("a response");
    assert_eq!(r.status, 200);
    assert_eq!(double.requests().len(), 1);
}
