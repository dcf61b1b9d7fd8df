//! Requests to Ollama's native API as most tests send them (the OpenAI-compatible ones
//! are in [`crate::oai`]).

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};

use crate::http::post;

/// A `/api/chat` body: `model`, one user message ("hello there": two prompt tokens for
/// the double), then the fields of `extra` on top (e.g. `json!({"stream": false})`).
pub fn chat(model: &str, extra: Value) -> Value {
    let mut v = json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]});
    for (k, x) in extra.as_object().expect("extra is a JSON object") {
        v[k] = x.clone();
    }
    v
}

/// [`chat`] POSTed to `/api/chat`.
pub fn chat_request(model: &str, extra: Value) -> Request<Full<Bytes>> {
    post("/api/chat", &chat(model, extra))
}
