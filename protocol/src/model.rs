//! Model names canonicalised the way Ollama reads them. Read from ollama/ollama v0.33.0-rc2
//! (commit fb30760996871fa9460115c753afd2c60d4ab0f7): `internal/modelref/modelref.go`
//! `ParseRef` first strips one source suffix (`:local`, `:cloud`, or `-cloud` ending the
//! tag; two of them is an error), then `types/model/name.go` `ParseName` reads the base as
//! `[[scheme://]host/][namespace/]model[:tag]` with defaults `registry.ollama.ai`,
//! `library`, `latest`; `server/routes.go` `getExistingName` matches every part ASCII
//! case-insensitively. Ollama has no digest form since `types/model: remove knowledge of
//! digest` (#5500): `@` is invalid in every part. Allowlist patterns are globs over
//! canonical names.

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
const CLOUD_SUFFIX: &str = "-cloud";

/// Why a string is not a model name Ollama would accept.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ModelNameError {
    #[error("model name is empty")]
    Empty,
    #[error("invalid model name {0:?}")]
    Invalid(String),
    #[error("model name {0:?} names a digest; the bridge decides on names only")]
    Digest(String),
    #[error("model name {0:?} has two source suffixes: use either :local or :cloud, not both")]
    ConflictingSource(String),
}

/// A canonical model name: lowercase, every part filled in. A cloud model (`:cloud`,
/// `-cloud`, `:tag:cloud`) keeps its source in the tag: `kimi:cloud` when the tag is the
/// default, else `gpt-oss:120b-cloud`; `:local` is dropped, as Ollama runs the base name.
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

/// Ollama's `isValidPart` (plus `*`, `?` in patterns).
fn valid_part(kind: Part, s: &str, allow_glob: bool) -> bool {
    let max = if kind == Part::Host {
        MAX_HOST
    } else {
        MAX_PART
    };
    if s.is_empty() || s.len() > max {
        return false;
    }
    let first_ok = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || (allow_glob && c == b'*');
    if !first_ok(s.as_bytes()[0]) {
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

/// Ollama's `parseSourceSuffix`: the name without an explicit source suffix and whether
/// that suffix says cloud, or `None` when there is none. The suffix after the last `:`
/// is trimmed and compared case-insensitively (`m: LOCAL` is `m`); `-cloud` ending a tag
/// is a cloud source (`m:7b-cloud` is `m:7b` on ollama.com).
fn source_suffix(raw: &str) -> Option<(String, bool)> {
    let idx = raw.rfind(':')?;
    let suffix_raw = raw[idx + 1..].trim();
    // Go lowercases with Unicode rules, but no non-ASCII letter lowercases into
    // `cloud` or `local`, so ASCII folding decides the same.
    let suffix = suffix_raw.to_ascii_lowercase();
    match suffix.as_str() {
        "cloud" => return Some((raw[..idx].to_owned(), true)),
        "local" => return Some((raw[..idx].to_owned(), false)),
        _ => {}
    }
    if !suffix_raw.contains('/') && suffix.ends_with(CLOUD_SUFFIX) {
        let tag = &suffix_raw[..suffix_raw.len() - CLOUD_SUFFIX.len()];
        return Some((format!("{}{tag}", &raw[..=idx]), true));
    }
    None
}

/// Ollama's `ParseRef`: trims, strips one source suffix, refuses a second.
/// Returns the base name and whether it is a cloud model.
fn parse_ref(raw: &str) -> Result<(String, bool), ModelNameError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(ModelNameError::Empty);
    }
    match source_suffix(s) {
        None => Ok((s.to_owned(), false)),
        Some((base, _)) if source_suffix(&base).is_some() => {
            Err(ModelNameError::ConflictingSource(raw.to_owned()))
        }
        Some((base, cloud)) => Ok((base, cloud)),
    }
}

/// Splits a name into (host, namespace, model, tag) with defaults filled in and the
/// cloud source written into the tag.
fn split(raw: &str, allow_glob: bool) -> Result<[String; 4], ModelNameError> {
    let (base, cloud) = parse_ref(raw)?;
    let s = base.as_str();
    // `ParseNameBare`: a `:` after the last `/` starts the tag; then the model, the
    // namespace and the host are cut off at the last `/`, each promised part non-empty;
    // the host may carry a scheme (`https://`), which does not name a different model.
    let (rest, tag) = match (s.rfind(':'), s.rfind('/')) {
        (Some(c), sl) if sl.is_none_or(|sl| c > sl) => (&s[..c], Some(&s[c + 1..])),
        _ => (s, None),
    };
    let (rest, model) = match rest.rsplit_once('/') {
        Some((r, m)) => (Some(r), m),
        None => (None, rest),
    };
    let (host, ns) = match rest.map(|r| r.rsplit_once('/')) {
        None => (None, None),
        Some(None) => (None, rest),
        Some(Some((h, n))) => {
            // `Merge` fills in an empty host, which only a bare scheme (`https:///`) leaves.
            let host = match h.split_once("://") {
                Some((_, "")) => None,
                Some((_, host)) => Some(host),
                None => Some(h),
            };
            (host, Some(n))
        }
    };
    let checks = [
        (Part::Host, host),
        (Part::Namespace, ns),
        (Part::Model, Some(model)),
        (Part::Tag, tag),
    ];
    if checks
        .iter()
        .any(|&(kind, part)| part.is_some_and(|p| !valid_part(kind, p, allow_glob)))
    {
        // A digest reference (`m:7b@sha256:…`) says so; a scheme is dropped unread.
        let digest = checks
            .iter()
            .any(|(_, p)| p.is_some_and(|p| p.contains('@')));
        return Err(if digest {
            ModelNameError::Digest(raw.to_owned())
        } else {
            ModelNameError::Invalid(raw.to_owned())
        });
    }
    // In a pattern, a model part ending in `*` with no tag means every (local) tag of it.
    let default_tag = if allow_glob && model.ends_with('*') && !cloud {
        "*"
    } else {
        DEFAULT_TAG
    };
    let tag = tag.unwrap_or(default_tag).to_ascii_lowercase();
    let tag = match (cloud, tag.as_str()) {
        (false, _) => tag,
        (true, DEFAULT_TAG) => "cloud".to_owned(),
        (true, _) => format!("{tag}{CLOUD_SUFFIX}"),
    };
    Ok([
        host.unwrap_or(DEFAULT_HOST).to_ascii_lowercase(),
        ns.unwrap_or(DEFAULT_NAMESPACE).to_ascii_lowercase(),
        model.to_ascii_lowercase(),
        tag,
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

    /// Cloud models run on ollama.com, not on this machine: an explicit cloud source
    /// (`:cloud`, a tag ending `-cloud`, `:tag:cloud`), and, to be safe, a model part
    /// ending `-cloud` (Ollama reads `deepseek-cloud` as a local name, but a local name
    /// can be a stub that Ollama forwards to ollama.com).
    pub fn is_cloud(&self) -> bool {
        self.tag == "cloud"
            || self.tag.ends_with(CLOUD_SUFFIX)
            || self.model.ends_with(CLOUD_SUFFIX)
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

    /// Could some model match both patterns? (Whether a `[model]` policy can apply to a
    /// sandbox's allowlist entry.)
    pub fn overlaps(&self, other: &ModelPattern) -> bool {
        match (&self.glob, &other.glob) {
            (Some(a), Some(b)) => globs_intersect(a.as_bytes(), b.as_bytes()),
            _ => true,
        }
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

/// Do two globs (`*`, `?`) match a common string? Dynamic programming over positions:
/// a `*` either ends or absorbs the other side's next byte (or wildcard).
fn globs_intersect(p: &[u8], q: &[u8]) -> bool {
    let (n, m) = (p.len(), q.len());
    // can[i][j]: p[i..] and q[j..] match a common string.
    let mut can = vec![vec![false; m + 1]; n + 1];
    for i in (0..=n).rev() {
        for j in (0..=m).rev() {
            can[i][j] = if i == n && j == m {
                true
            } else if i < n && p[i] == b'*' {
                can[i + 1][j] || (j < m && can[i][j + 1])
            } else if j < m && q[j] == b'*' {
                can[i][j + 1] || (i < n && can[i + 1][j])
            } else if i < n && j < m {
                (p[i] == b'?' || q[j] == b'?' || p[i] == q[j]) && can[i + 1][j + 1]
            } else {
                false
            };
        }
    }
    can[0][0]
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
#[path = "model_tests.rs"]
mod tests;
