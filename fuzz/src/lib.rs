//! Shared pieces of the fuzz targets: the policies requests are decided against, a
//! reading of a JSON body the way Ollama's Go decoder reads it (the oracle for "what is
//! forwarded is what was decided on"), an SSE event parser that checks the framing, and
//! a small deterministic generator for frame splits; and `ollama_name`, Ollama's reading
//! of a model name transliterated from its Go (the oracle for `ModelName`).

pub mod ollama_name;

use std::sync::OnceLock;

use protocol::config::{Config, DefaultsEnv};
use protocol::json::go_fold;
use protocol::route::Route;
use protocol::Sandbox;
use serde_json::{Map, Value};

/// Two sandboxes as an operator writes them (deploy/config/bridge.toml): `automation`
/// is narrow, `open` allows every endpoint class (cloud and manage included).
const CONFIG: &str = r#"
[[sandbox]]
name = "automation"
listen = "unix:/run/ollama-bridge/automation/ollama.sock"
models = ["qwen2.5:7b", "llama3.2:*", "hf.co/org/*"]
endpoints = ["chat", "generate", "embed", "list", "openai"]

[[sandbox]]
name = "open"
listen = "unix:/run/ollama-bridge/open/ollama.sock"
models = ["*"]
endpoints = ["chat", "generate", "embed", "list", "openai", "openai-responses", "anthropic", "manage", "cloud"]

[model."qwen2.5:7b"]
num_ctx = 32768
keep_alive = "30m"
options = { num_gpu = 99, use_mmap = false }

[model."llama3.2:*"]
num_ctx_min = 8192
num_ctx_max = 32768
keep_alive_max = "10m"

[model."hf.co/org/*"]
keep_alive = -1
options = { num_batch = 512 }
"#;

/// The parsed configuration (parsed once per process).
pub fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| Config::parse(CONFIG, &DefaultsEnv::default()).expect("fuzz config parses"))
}

/// The sandboxes of [`config`].
pub fn sandboxes() -> &'static [Sandbox] {
    &config().sandboxes
}

/// The value Go's `encoding/json` would decode into a struct field tagged `field`:
/// the exact key, else a key equal under Go's folding (the strict parser guarantees
/// there is at most one).
pub fn go_field<'a>(obj: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    if let Some(v) = obj.get(field) {
        return Some(v);
    }
    let want = go_fold(field);
    let mut found = obj.iter().filter(|(k, _)| go_fold(k) == want);
    let first = found.next().map(|(_, v)| v);
    assert!(found.next().is_none(), "two keys fold to {field:?}");
    first
}

/// The fields Ollama's request type for `route` has a model name in, written from
/// Ollama's source (ollama/ollama main fb30760, after v0.33.0-rc2) independently of
/// `Route::model_fields`: `api/types.go` gives `ShowRequest`, `PullRequest`,
/// `PushRequest`, `DeleteRequest` and `CreateRequest` the deprecated `name` (their
/// handlers take `model` when non-empty, else `name`); `ChatRequest`, `GenerateRequest`,
/// `EmbedRequest`, `EmbeddingRequest` and the `openai` package's requests have `model`
/// alone; `CopyRequest` has `source` and `destination`. `(fields, all)`: with `all`,
/// every field names a model; otherwise the first non-empty one does.
fn ollama_fields(route: &Route) -> (&'static [&'static str], bool) {
    match route {
        Route::Show | Route::Pull | Route::Push | Route::Delete | Route::Create => {
            (&["model", "name"], false)
        }
        Route::Chat
        | Route::Generate
        | Route::Embed
        | Route::Embeddings
        | Route::OaiChat
        | Route::OaiCompletions
        | Route::OaiEmbeddings
        | Route::OaiResponses
        | Route::AnthropicMessages => (&["model"], false),
        Route::Copy => (&["source", "destination"], true),
        _ => (&[], false),
    }
}

/// The model names Ollama reads from a forwarded body for `route` (see
/// [`ollama_fields`]). Non-strings read as absent, as Go would fail the request rather
/// than pick another field; a chosen name that is blank is no name (`ParseRef` trims it
/// and answers `model is required`).
pub fn ollama_models(obj: &Map<String, Value>, route: &Route) -> Vec<String> {
    let text = |f: &str| match go_field(obj, f) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let named = |s: &String| !s.trim().is_empty();
    match ollama_fields(route) {
        (fields, true) => fields
            .iter()
            .filter_map(|f| text(f))
            .filter(named)
            .collect(),
        (fields, false) => fields
            .iter()
            .find_map(|f| text(f))
            .filter(named)
            .into_iter()
            .collect(),
    }
}

/// One server-sent event's data.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Done,
    Json(Value),
}

/// Parses an SSE byte stream, asserting its framing: every event is exactly
/// `data: <one line>\n\n`, and the data is `[DONE]` or one JSON value.
pub fn sse_events(bytes: &[u8]) -> Vec<Event> {
    let text = std::str::from_utf8(bytes).expect("SSE output is UTF-8");
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "SSE output does not end an event: {text:?}"
    );
    let mut out = Vec::new();
    for ev in text.split_terminator("\n\n") {
        let data = ev
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("event without `data: `: {ev:?}"));
        assert!(
            !data.contains(['\n', '\r']),
            "event data spans lines: {data:?}"
        );
        if data == "[DONE]" {
            out.push(Event::Done);
        } else {
            let v: Value = serde_json::from_str(data)
                .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {data:?}"));
            out.push(Event::Json(v));
        }
    }
    out
}

/// splitmix64: a deterministic stream of numbers from a seed (frame splits).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Cuts `data` into frames of 1..=`max` bytes.
    pub fn frames<'a>(&mut self, mut data: &'a [u8], max: usize) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let n = 1 + (self.next_u64() as usize % max.max(1));
            let (a, b) = data.split_at(n.min(data.len()));
            out.push(a);
            data = b;
        }
        out
    }
}
