//! Unit tests for model names: the forms Ollama v0.33.0-rc2 accepts and how they canonicalise.

use super::*;

fn full(s: &str) -> String {
    ModelName::parse(s).unwrap().full()
}

#[test]
fn canonical_forms_agree() {
    let want = "registry.ollama.ai/library/qwen2.5:latest";
    for s in [
        "qwen2.5",
        "qwen2.5:latest",
        "library/qwen2.5",
        "registry.ollama.ai/library/qwen2.5:latest",
        "QWEN2.5:Latest",
        "https://registry.ollama.ai/library/qwen2.5",
        " qwen2.5 ",
    ] {
        assert_eq!(full(s), want, "{s}");
    }
    assert_eq!(
        ModelName::parse("qwen2.5").unwrap().to_string(),
        "qwen2.5:latest"
    );
    assert_eq!(full("hf.co/org/m:q4"), "hf.co/org/m:q4");
    assert_eq!(full("localhost:5000/ns/m"), "localhost:5000/ns/m:latest");
    assert_eq!(ModelName::parse("me/m:1b").unwrap().to_string(), "me/m:1b");
}

#[test]
fn invalid_names() {
    for s in [
        "",
        " ",
        "a/b/c/d",
        "qwen:",
        ":7b",
        "-x",
        "x y",
        "ns.x/m",
        "m:t:u",
        "a//b",
        "/m",
        "m/",
        "*",
        // Ollama checks the first character of the host too.
        "-h/ns/m",
        ".h/ns/m",
        // A scheme only fits in front of a host (three parts).
        "https://qwen2.5",
        "http://ns/m",
        "x://y://h/ns/m",
        // No part holds a `:` but the host; empty parts are missing parts.
        "ns:x/m",
        "m:-cloud",
        "m: 7b",
        "m :local",
        "m:7b -cloud",
        "h/ns/m\u{e9}",
        &"m".repeat(81),
        &format!("m:{}", "t".repeat(81)),
        &format!("{}/n/m", "h".repeat(351)),
    ] {
        assert!(ModelName::parse(s).is_err(), "{s:?} accepted");
    }
    // No digests since Ollama's #5500: `@` is in no part's alphabet.
    for s in [
        "qwen@sha256:abc",
        "qwen2.5:7b@sha256:00",
        "@sha256:00",
        "m@x:cloud",
    ] {
        assert!(
            matches!(ModelName::parse(s), Err(ModelNameError::Digest(_))),
            "{s:?}"
        );
    }
}

#[test]
fn longest_parts_pass() {
    assert!(ModelName::parse(&"m".repeat(80)).is_ok());
    assert!(ModelName::parse(&format!("m:{}", "t".repeat(80))).is_ok());
    assert!(ModelName::parse(&format!("{}/n/m", "h".repeat(350))).is_ok());
    // The 80 bytes bound the tag without its source suffix.
    let t80 = "t".repeat(80);
    let cloud = ModelName::parse(&format!("m:{t80}-cloud")).unwrap();
    assert_eq!(cloud.tag(), format!("{t80}-cloud"));
    assert_eq!(ModelName::parse(&cloud.full()).unwrap(), cloud);
}

#[test]
fn dots_and_schemes_as_ollama_reads_them() {
    // Ollama has no `..` rule: `a..b` is a plain (valid) model name.
    assert_eq!(full("a..b"), "registry.ollama.ai/library/a..b:latest");
    assert_eq!(full("m:1..2"), "registry.ollama.ai/library/m:1..2");
    // Any scheme before the host is cut off at the first `://`.
    assert_eq!(full("ftp://h/ns/m"), "h/ns/m:latest");
    assert_eq!(full("://h/ns/m:1"), "h/ns/m:1");
    assert_eq!(full("HTTP://H:5000/NS/M"), "h:5000/ns/m:latest");
    assert_eq!(full("_h/_n/_m:_t"), "_h/_n/_m:_t");
    // The scheme is dropped unread, whatever it holds (found by the fuzz target).
    assert_eq!(full("a@b c://h/ns/m"), "h/ns/m:latest");
    // A scheme with nothing after it leaves the host empty, and Ollama's Merge fills in
    // the default; without a scheme an empty host is a missing part.
    assert_eq!(
        full("https:///library/m"),
        "registry.ollama.ai/library/m:latest"
    );
    assert!(ModelName::parse("/library/m").is_err());
}

#[test]
fn local_source_is_the_base_name() {
    // Ollama's ParseRef strips `:local`; it runs the base name (and refuses cloud stubs).
    for (raw, want) in [
        ("llama3.2:local", "llama3.2:latest"),
        ("llama3.2:LOCAL", "llama3.2:latest"),
        ("llama3.2:latest:local", "llama3.2:latest"),
        ("llama3.2:3b:local", "llama3.2:3b"),
        ("llama3.2: local", "llama3.2:latest"),
        ("llama3.2:\tLocal ", "llama3.2:latest"),
        ("  llama3.2:local  ", "llama3.2:latest"),
        ("me/m:1b:local", "me/m:1b"),
        ("localhost:5000/ns/m:local", "localhost:5000/ns/m:latest"),
        ("localhost:local", "localhost:latest"),
    ] {
        let n = ModelName::parse(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        assert_eq!(n.to_string(), want, "{raw:?}");
        assert_eq!(n, ModelName::parse(want).unwrap());
        assert!(!n.is_cloud(), "{raw:?}");
    }
    // The policy for the base name applies.
    let p = ModelPattern::parse("llama3.2:latest").unwrap();
    assert!(p.matches(&ModelName::parse("llama3.2:local").unwrap()));
    // A pattern written with `:local` is the base pattern.
    let p = ModelPattern::parse("llama3.2:3b:local").unwrap();
    assert!(p.matches(&ModelName::parse("llama3.2:3b").unwrap()));
}

#[test]
fn cloud_source_forms() {
    for (raw, want) in [
        ("gpt-oss:120b-cloud", "gpt-oss:120b-cloud"),
        ("gpt-oss:120b:cloud", "gpt-oss:120b-cloud"),
        ("GPT-OSS:120B-CLOUD", "gpt-oss:120b-cloud"),
        ("gpt-oss:120b:Cloud", "gpt-oss:120b-cloud"),
        ("gpt-oss: 120b-cloud", "gpt-oss:120b-cloud"),
        ("gpt-oss:120b: cloud", "gpt-oss:120b-cloud"),
        ("kimi:cloud", "kimi:cloud"),
        ("kimi:latest:cloud", "kimi:cloud"),
        ("kimi:latest-cloud", "kimi:cloud"),
        ("me/m:1b-cloud", "me/m:1b-cloud"),
        ("hf.co/org/m:cloud", "hf.co/org/m:cloud"),
        (
            "localhost:5000/ns/m:q4-cloud",
            "localhost:5000/ns/m:q4-cloud",
        ),
    ] {
        let n = ModelName::parse(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        assert_eq!(n.to_string(), want, "{raw:?}");
        assert!(n.is_cloud(), "{raw:?}");
        assert_eq!(ModelName::parse(&n.full()).unwrap(), n, "{raw:?}");
        assert_eq!(ModelName::parse(want).unwrap(), n, "{raw:?}");
    }
    // A model part ending `-cloud` is a local name to Ollama; the bridge still counts it
    // as cloud, since such a name is usually a stub Ollama forwards to ollama.com.
    let n = ModelName::parse("deepseek-cloud").unwrap();
    assert_eq!(n.to_string(), "deepseek-cloud:latest");
    assert!(n.is_cloud());
    // A cloud model is not the local model of the same base name.
    let local = ModelPattern::parse("gpt-oss:120b").unwrap();
    assert!(!local.matches(&ModelName::parse("gpt-oss:120b:cloud").unwrap()));
    assert!(!ModelName::parse("gpt-oss:120b").unwrap().is_cloud());
    assert!(!ModelName::parse("cloud").unwrap().is_cloud());
    assert!(!ModelName::parse("cloud:7b").unwrap().is_cloud());
    assert!(!ModelName::parse("local/m").unwrap().is_cloud());
}

#[test]
fn two_source_suffixes_conflict() {
    for s in [
        "m:cloud:local",
        "m:local:cloud",
        "m:local:local",
        "m:cloud:cloud",
        "m:7b-cloud:local",
        "m:7b:cloud:local",
        "m:cloud-cloud",
        "m:local-cloud",
        "m:7b-cloud-cloud",
        "m:7b-cloud:cloud",
    ] {
        assert!(
            matches!(
                ModelName::parse(s),
                Err(ModelNameError::ConflictingSource(_))
            ),
            "{s:?}: {:?}",
            ModelName::parse(s)
        );
    }
}

#[test]
fn patterns() {
    let name = |s| ModelName::parse(s).unwrap();
    let p = ModelPattern::parse("llama3.2:*").unwrap();
    assert!(p.matches(&name("llama3.2:3b")));
    assert!(p.matches(&name("llama3.2")));
    assert!(!p.matches(&name("llama3.3:70b")));
    let exact = ModelPattern::parse("qwen2.5:latest").unwrap();
    assert!(exact.matches(&name("qwen2.5")));
    assert!(exact.matches(&name("registry.ollama.ai/library/qwen2.5:latest")));
    assert!(!exact.matches(&name("qwen2.5:7b")));
    assert!(exact.is_literal() && !p.is_literal());
    let all = ModelPattern::parse("*").unwrap();
    assert!(all.matches(&name("anything:1")));
    assert!(p.specificity() > all.specificity());
    let cloud = ModelPattern::parse("gpt-oss:*-cloud").unwrap();
    assert!(cloud.matches(&name("gpt-oss:120b:cloud")));
    assert!(cloud.matches(&name("gpt-oss:20b-cloud")));
    assert!(!cloud.matches(&name("gpt-oss:20b")));
    let cloud = ModelPattern::parse("kimi*:cloud").unwrap();
    assert!(cloud.matches(&name("kimi-k2:latest:cloud")));
    assert!(!cloud.matches(&name("kimi-k2:1t-cloud")));
    assert!(!cloud.matches(&name("kimi-k2")));
    let local = ModelPattern::parse("llama*:local").unwrap();
    assert!(local.matches(&name("llama3.2:3b")));
    // Like every `*` tag, it admits cloud tags too: the `cloud` class decides those.
    assert!(local.matches(&name("llama3.2:3b-cloud")));
    assert!(ModelPattern::parse("m:cloud:local").is_err());
    let ns = ModelPattern::parse("myorg/*").unwrap();
    assert!(ns.matches(&name("myorg/m:1")));
    assert!(!ns.matches(&name("m:1")));
}

#[test]
fn glob() {
    assert!(glob_match(b"a*c", b"abbbc"));
    assert!(glob_match(b"*", b""));
    assert!(glob_match(b"a?c", b"abc"));
    assert!(!glob_match(b"a*d", b"abc"));
}

#[test]
fn patterns_overlap_when_some_model_matches_both() {
    let p = |s: &str| ModelPattern::parse(s).unwrap();
    for (a, b, want) in [
        ("qwen2.5:*", "qwen2.5:7b", true),
        ("qwen2.5:*", "llama3.3:70b", false),
        ("*", "llama3.3:70b", true),
        ("llama3.2:*", "llama*", true),
        ("llama3.2:*b", "llama3.2:3b", true),
        ("llama3.2:*b", "llama3.2:latest", false),
        ("*:7b", "qwen*", true),
        ("myorg/*", "qwen2.5:7b", false),
    ] {
        assert_eq!(p(a).overlaps(&p(b)), want, "{a} vs {b}");
        assert_eq!(p(b).overlaps(&p(a)), want, "{b} vs {a}");
    }
}
