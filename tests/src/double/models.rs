//! What the double knows of its models, read as Ollama reads requests: the request body
//! and the model it names, embeddings, and the listings (tags, ps, show, pull).

use http::{Response, StatusCode};
use protocol::ModelName;
use serde_json::{json, Map, Value};

use super::native::line;
use super::server::{error, json as json_resp, DBody};
use super::tokenize;
use super::{DoubleModel, State};

pub fn parse_body(body: &[u8]) -> Result<Map<String, Value>, Response<DBody>> {
    if body.is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "missing request body"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(error(StatusCode::BAD_REQUEST, "invalid request body")),
        Err(e) => Err(error(StatusCode::BAD_REQUEST, &e.to_string())),
    }
}

/// The model a request names, read as Ollama reads it: `model` alone (chat, generate,
/// embed, embeddings and the `/v1` layer: their request types have no `name`), or with
/// `legacy_name`, `model` if non-empty else the deprecated `name` (show, pull, push,
/// delete, create).
pub fn find_model(state: &State, req: &Map<String, Value>) -> Result<DoubleModel, Response<DBody>> {
    find_model_in(state, req, false)
}

pub fn find_model_in(
    state: &State,
    req: &Map<String, Value>,
    legacy_name: bool,
) -> Result<DoubleModel, Response<DBody>> {
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let raw = match model {
        None if legacy_name => req.get("name").and_then(Value::as_str).unwrap_or(""),
        m => m.unwrap_or(""),
    };
    if raw.trim().is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "model is required"));
    }
    lookup(state, raw)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, &format!("model '{raw}' not found")))
}

pub fn lookup(state: &State, raw: &str) -> Option<DoubleModel> {
    let want = ModelName::parse(raw).ok()?;
    let cfg = state.config.lock().unwrap();
    cfg.models
        .iter()
        .find(|m| ModelName::parse(&m.name).ok().as_ref() == Some(&want))
        .cloned()
}

/// A deterministic 8-dimensional embedding of a text.
pub fn vector(text: &str) -> Vec<f64> {
    let mut v = [0f64; 8];
    for (i, b) in text.bytes().enumerate() {
        v[i % 8] += b as f64 / 255.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-9);
    v.iter().map(|x| (x / norm * 1e6).round() / 1e6).collect()
}

pub fn embed(state: &State, body: &[u8], legacy: bool) -> Response<DBody> {
    let req = match parse_body(body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let model = match find_model(state, &req) {
        Ok(m) => m,
        Err(e) => return e,
    };
    if legacy {
        let p = req.get("prompt").and_then(Value::as_str).unwrap_or("");
        return json_resp(StatusCode::OK, &json!({"embedding": vector(p)}));
    }
    let inputs: Vec<String> = match req.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let tokens: u64 = inputs.iter().map(|s| tokenize::count(s)).sum();
    json_resp(
        StatusCode::OK,
        &json!({
            "model": model.name,
            "embeddings": inputs.iter().map(|s| vector(s)).collect::<Vec<_>>(),
            "total_duration": 14_143_917u64,
            "load_duration": 1_019_500u64,
            "prompt_eval_count": tokens,
        }),
    )
}

fn model_entry(m: &DoubleModel) -> Value {
    json!({
        "name": m.name,
        "model": m.name,
        "modified_at": "2026-10-01T12:00:00.000000Z",
        "size": 4_683_087_332u64,
        "digest": format!("{:064x}", (m.name.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        "details": {"format": "gguf", "family": "qwen2", "parameter_size": "7.6B", "quantization_level": "Q4_K_M"}
    })
}

pub fn tags(state: &State) -> Response<DBody> {
    let cfg = state.config.lock().unwrap();
    json_resp(
        StatusCode::OK,
        &json!({"models": cfg.models.iter().map(model_entry).collect::<Vec<_>>()}),
    )
}

pub fn ps(state: &State) -> Response<DBody> {
    let cfg = state.config.lock().unwrap();
    let models: Vec<Value> = cfg
        .models
        .iter()
        .filter(|m| cfg.loaded.as_ref().is_none_or(|l| l.contains(&m.name)))
        .map(|m| {
            let mut e = model_entry(m);
            e["expires_at"] = json!("2026-11-20T10:05:00.000000Z");
            e["size_vram"] = json!(4_683_087_332u64);
            e["context_length"] = json!(cfg.default_num_ctx.min(m.context_length));
            e
        })
        .collect();
    json_resp(StatusCode::OK, &json!({"models": models}))
}

pub fn show(state: &State, body: &[u8]) -> Response<DBody> {
    let req = match parse_body(body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    match find_model_in(state, &req, true) {
        Ok(m) => json_resp(
            StatusCode::OK,
            &json!({
                "modelfile": format!("FROM {}", m.name),
                "parameters": "",
                "template": "{{ .Prompt }}",
                "details": {"format": "gguf", "family": "qwen2"},
                "model_info": {"general.context_length": m.context_length},
                "capabilities": if m.embedding { json!(["embedding"]) } else { json!(["completion", "tools"]) },
            }),
        ),
        Err(e) => e,
    }
}

pub fn pull(body: &[u8]) -> Response<DBody> {
    if let Err(e) = parse_body(body) {
        return e;
    }
    let lines = [
        json!({"status": "pulling manifest"}),
        json!({"status": "success"}),
    ];
    let body: Vec<u8> = lines.iter().flat_map(|l| line(l).to_vec()).collect();
    super::server::full(StatusCode::OK, "application/x-ndjson", body)
}
