//! Model names canonicalised the way Ollama reads them (`types/model/name.go`):
//! `[host/][namespace/]model[:tag][@digest]`, defaults `registry.ollama.ai`, `library`,
//! `latest`, ASCII case-insensitive. Allowlist patterns are globs over canonical names.

use std::fmt;

use thiserror::Error;

/// Ollama's default registry host.
pub const DEFAULT_HOST: &str = "registry.ollama.ai";
/// Ollama's default namespace.
pub const DEFAULT_NAMESPACE: &str = "library";
/// Ollama's default tag.
pub const DEFAULT_TAG: &str = "latest";

const MAX_PART: usize = 80;
const MAX_HOST: usize = 350;

/// Why a string is not a model name Ollama would accept.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ModelNameError {
    #[error("model name is empty")]
    Empty,
    #[error("invalid model name {0:?}")]
    Invalid(String),
    #[error("model name {0:?} names a digest; the bridge decides on names only")]
    Digest(String),
}

/// A canonical model name: lowercase, every part filled in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelName {
    host: String,
    namespace: String,
    model: String,
    tag: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Part {
    Host,
    Namespace,
    Model,
    Tag,
}

fn valid_part(kind: Part, s: &str, allow_glob: bool) -> bool {
    let max = if kind == Part::Host {
        MAX_HOST
    } else {
        MAX_PART
    };
    if s.is_empty() || s.len() > max || s.contains("..") {
        return false;
    }
    let first_ok = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || (allow_glob && c == b'*');
    if kind != Part::Host && !first_ok(s.as_bytes()[0]) {
        return false;
    }
    s.bytes().all(|c| {
        c.is_ascii_alphanumeric()
            || c == b'_'
            || c == b'-'
            || (c == b'.' && kind != Part::Namespace)
            || (c == b':' && kind == Part::Host)
            || (allow_glob && (c == b'*' || c == b'?'))
    })
}

/// Splits a name into (host, namespace, model, tag) with defaults filled in.
fn split(raw: &str, allow_glob: bool) -> Result<[String; 4], ModelNameError> {
    let s = raw.trim();
    let s = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .unwrap_or(s);
    if s.is_empty() {
        return Err(ModelNameError::Empty);
    }
    if s.contains('@') {
        return Err(ModelNameError::Digest(raw.to_owned()));
    }
    let invalid = || ModelNameError::Invalid(raw.to_owned());
    let last_slash = s.rfind('/');
    let (path, tag) = match s.rfind(':') {
        Some(c) if last_slash.is_none_or(|sl| c > sl) => (&s[..c], Some(&s[c + 1..])),
        _ => (s, None),
    };
    let segs: Vec<&str> = path.split('/').collect();
    let (host, ns, model) = match segs.as_slice() {
        [m] => (None, None, *m),
        [n, m] => (None, Some(*n), *m),
        [h, n, m] => (Some(*h), Some(*n), *m),
        _ => return Err(invalid()),
    };
    let checks = [
        (Part::Host, host),
        (Part::Namespace, ns),
        (Part::Model, Some(model)),
        (Part::Tag, tag),
    ];
    for (kind, part) in checks {
        if let Some(p) = part {
            if !valid_part(kind, p, allow_glob) {
                return Err(invalid());
            }
        }
    }
    // In a pattern, a model part ending in `*` with no tag means every tag of it.
    let default_tag = if allow_glob && model.ends_with('*') {
        "*"
    } else {
        DEFAULT_TAG
    };
    Ok([
        host.unwrap_or(DEFAULT_HOST).to_ascii_lowercase(),
        ns.unwrap_or(DEFAULT_NAMESPACE).to_ascii_lowercase(),
        model.to_ascii_lowercase(),
        tag.unwrap_or(default_tag).to_ascii_lowercase(),
    ])
}

impl ModelName {
    /// Parses and canonicalises a model name as Ollama would.
    pub fn parse(raw: &str) -> Result<Self, ModelNameError> {
        let [host, namespace, model, tag] = split(raw, false)?;
        Ok(ModelName {
            host,
            namespace,
            model,
            tag,
        })
    }

    /// The fully qualified form, `registry.ollama.ai/library/qwen2.5:7b`.
    pub fn full(&self) -> String {
        format!(
            "{}/{}/{}:{}",
            self.host, self.namespace, self.model, self.tag
        )
    }

    /// The model part (`qwen2.5`).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The tag (`7b`, `latest`).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Cloud models run on ollama.com, not on this machine: `:cloud` and `*-cloud` tags.
    pub fn is_cloud(&self) -> bool {
        self.tag == "cloud" || self.tag.ends_with("-cloud") || self.model.ends_with("-cloud")
    }
}

/// Shortest display form, as Ollama's `DisplayShortest`: default host and namespace
/// are left out, the tag is always shown (`qwen2.5:latest`, `hf.co/org/m:q4`).
impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host != DEFAULT_HOST {
            write!(f, "{}/{}/", self.host, self.namespace)?;
        } else if self.namespace != DEFAULT_NAMESPACE {
            write!(f, "{}/", self.namespace)?;
        }
        write!(f, "{}:{}", self.model, self.tag)
    }
}

/// An allowlist entry: `"*"` (every local model), or a glob (`*`, `?`) over canonical
/// names, written like a model name (`qwen2.5:7b`, `llama3.2:*`, `myorg/*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPattern {
    source: String,
    /// Glob over `ModelName::full()`; `None` means every model.
    glob: Option<String>,
}

impl ModelPattern {
    /// Parses an allowlist entry.
    pub fn parse(raw: &str) -> Result<Self, ModelNameError> {
        if raw.trim() == "*" {
            return Ok(ModelPattern {
                source: raw.to_owned(),
                glob: None,
            });
        }
        let [host, ns, model, tag] = split(raw, true)?;
        Ok(ModelPattern {
            source: raw.to_owned(),
            glob: Some(format!("{host}/{ns}/{model}:{tag}")),
        })
    }

    /// Does this pattern admit `name`?
    pub fn matches(&self, name: &ModelName) -> bool {
        match &self.glob {
            None => true,
            Some(g) => glob_match(g.as_bytes(), name.full().as_bytes()),
        }
    }

    /// How specific the pattern is: literal characters count, wildcards don't.
    pub fn specificity(&self) -> usize {
        self.glob
            .as_deref()
            .map_or(0, |g| g.bytes().filter(|&c| c != b'*' && c != b'?').count())
    }

    /// Is this pattern a plain name with no wildcard?
    pub fn is_literal(&self) -> bool {
        self.glob
            .as_deref()
            .is_some_and(|g| !g.contains(['*', '?']))
    }

    /// The entry as written in the config.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for ModelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Iterative glob match with `*` (any run) and `?` (one byte).
fn glob_match(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
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
            "", "a/b/c/d", "qwen:", ":7b", "a..b", "-x", "x y", "ns.x/m", "m:t:u", "a//b", "/m",
            "m/", "*",
        ] {
            assert!(ModelName::parse(s).is_err(), "{s:?} accepted");
        }
        assert!(matches!(
            ModelName::parse("qwen@sha256:abc"),
            Err(ModelNameError::Digest(_))
        ));
    }

    #[test]
    fn cloud() {
        for s in ["gpt-oss:120b-cloud", "kimi:cloud", "deepseek-cloud"] {
            assert!(ModelName::parse(s).unwrap().is_cloud(), "{s}");
        }
        assert!(!ModelName::parse("qwen2.5:7b").unwrap().is_cloud());
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
}
