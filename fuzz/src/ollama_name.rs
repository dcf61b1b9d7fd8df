//! Ollama's reading of a model name, transliterated from the Go of ollama/ollama v0.33.0-rc2
//! (commit fb30760996871fa9460115c753afd2c60d4ab0f7): `internal/modelref/modelref.go`
//! (`ParseRef`, `parseSourceSuffix`) and `types/model/name.go` (`ParseNameBare`, `Merge`,
//! `IsValid`, `isValidPart`, `cutPromised`). Written after the Go, statement by statement,
//! not after the bridge's `ModelName`: it is the oracle the model_name target holds it to.

/// What `cutPromised` puts in a part that a separator promised but that is empty.
const MISSING_PART: &str = "!MISSING!";

/// The source a name's suffix says (`modelref.ModelSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Unspecified,
    Local,
    Cloud,
}

/// A name as Ollama's `parseAndValidateModelRef` returns it, parts lowercased (Ollama's
/// `getExistingName` matches each part with `strings.EqualFold`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OllamaName {
    pub host: String,
    pub namespace: String,
    pub model: String,
    pub tag: String,
    pub source: Source,
}

/// Go's `strings.LastIndex`: -1 when absent.
fn last_index(s: &str, sep: &str) -> isize {
    s.rfind(sep).map_or(-1, |i| i as isize)
}

fn parse_source_suffix(raw: &str) -> (String, Source, bool) {
    let idx = last_index(raw, ":");
    if idx >= 0 {
        let idx = idx as usize;
        let suffix_raw = raw[idx + 1..].trim();
        let suffix = suffix_raw.to_lowercase();
        match suffix.as_str() {
            "cloud" => return (raw[..idx].to_owned(), Source::Cloud, true),
            "local" => return (raw[..idx].to_owned(), Source::Local, true),
            _ => {}
        }
        if !suffix_raw.contains('/') && suffix.ends_with("-cloud") {
            let keep = suffix_raw.len() - "-cloud".len();
            assert!(suffix_raw.is_char_boundary(keep), "{suffix_raw:?}");
            return (
                format!("{}{}", &raw[..idx + 1], &suffix_raw[..keep]),
                Source::Cloud,
                true,
            );
        }
    }
    (raw.to_owned(), Source::Unspecified, false)
}

/// `modelref.ParseRef`: `None` for its errors (empty, two source suffixes).
fn parse_ref(raw: &str) -> Option<(String, Source)> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    let (base, source, explicit) = parse_source_suffix(raw);
    if explicit {
        let (_, _, nested) = parse_source_suffix(&base);
        if nested {
            return None;
        }
    }
    Some((base, source))
}

fn cut_last<'a>(s: &'a str, sep: &str) -> (&'a str, &'a str, bool) {
    match s.rfind(sep) {
        Some(i) => (&s[..i], &s[i + sep.len()..], true),
        None => (s, "", false),
    }
}

fn or_missing(s: &str) -> String {
    if s.is_empty() {
        MISSING_PART.to_owned()
    } else {
        s.to_owned()
    }
}

fn cut_promised(s: &str, sep: &str) -> (String, String, bool) {
    let (before, after, ok) = cut_last(s, sep);
    if !ok {
        return (before.to_owned(), after.to_owned(), false);
    }
    (or_missing(before), or_missing(after), true)
}

#[derive(Default)]
struct Name {
    host: String,
    namespace: String,
    model: String,
    tag: String,
}

fn parse_name_bare(s: &str) -> Name {
    let mut n = Name::default();
    let mut s = s.to_owned();
    if last_index(&s, ":") > last_index(&s, "/") {
        let (rest, tag, _) = cut_promised(&s, ":");
        s = rest;
        n.tag = tag;
    }
    let (rest, model, promised) = cut_promised(&s, "/");
    if !promised {
        n.model = s;
        return n;
    }
    n.model = model;
    s = rest;
    let (rest, namespace, promised) = cut_promised(&s, "/");
    if !promised {
        n.namespace = s;
        return n;
    }
    n.namespace = namespace;
    s = rest;
    n.host = match s.split_once("://") {
        Some((_scheme, host)) => host.to_owned(),
        None => s,
    };
    n
}

fn or_default(s: String, default: &str) -> String {
    if s.is_empty() {
        default.to_owned()
    } else {
        s
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Host,
    Namespace,
    Model,
    Tag,
}

fn is_alphanumeric_or_underscore(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'
}

fn is_valid_part(kind: Kind, s: &str) -> bool {
    let max = if kind == Kind::Host { 350 } else { 80 };
    if s.is_empty() || s.len() > max {
        return false;
    }
    for (i, &c) in s.as_bytes().iter().enumerate() {
        if i == 0 {
            if !is_alphanumeric_or_underscore(c) {
                return false;
            }
            continue;
        }
        match c {
            b'_' | b'-' => {}
            b'.' => {
                if kind == Kind::Namespace {
                    return false;
                }
            }
            b':' => {
                if kind != Kind::Host {
                    return false;
                }
            }
            _ => {
                if !is_alphanumeric_or_underscore(c) {
                    return false;
                }
            }
        }
    }
    true
}

/// `parseAndValidateModelRef`: the name Ollama runs for `raw`, or `None` where Ollama
/// answers with an error.
pub fn parse(raw: &str) -> Option<OllamaName> {
    let (base, source) = parse_ref(raw)?;
    let n = parse_name_bare(&base);
    let n = Name {
        host: or_default(n.host, "registry.ollama.ai"),
        namespace: or_default(n.namespace, "library"),
        model: n.model,
        tag: or_default(n.tag, "latest"),
    };
    let valid = is_valid_part(Kind::Host, &n.host)
        && is_valid_part(Kind::Namespace, &n.namespace)
        && is_valid_part(Kind::Model, &n.model)
        && is_valid_part(Kind::Tag, &n.tag);
    valid.then(|| OllamaName {
        host: n.host.to_ascii_lowercase(),
        namespace: n.namespace.to_ascii_lowercase(),
        model: n.model.to_ascii_lowercase(),
        tag: n.tag.to_ascii_lowercase(),
        source,
    })
}
