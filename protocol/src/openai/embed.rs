//! OpenAI `/v1/embeddings` through Ollama's `/api/embed`: the request (input string or
//! strings, `dimensions`, `encoding_format`) and the answer in OpenAI's list shape, with
//! base64 vectors (little-endian f32, what the `openai` Python client asks for) on demand.

use serde_json::{json, Map, Value};

use super::field;
use super::request::{invalid, model_of, type_err};
use super::TranslateError;

/// An embeddings request in native form.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedRequest {
    /// The `/api/embed` body.
    pub native: Map<String, Value>,
    pub model: String,
    /// `encoding_format: "base64"`.
    pub base64: bool,
}

/// Translates a `/v1/embeddings` body.
pub fn embed_request(req: &Map<String, Value>) -> Result<EmbedRequest, TranslateError> {
    let model = model_of(req)?;
    let input = match field(req, "input") {
        Some(s @ Value::String(_)) => s.clone(),
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {
            Value::Array(a.clone())
        }
        None => {
            return Err(TranslateError::Missing {
                field: "input".into(),
            })
        }
        Some(_) => {
            return Err(type_err(
                "input",
                "a string or a non-empty array of strings",
            ))
        }
    };
    let base64 = match field(req, "encoding_format").map(|v| v.as_str()) {
        None | Some(Some("float")) => false,
        Some(Some("base64")) => true,
        Some(_) => {
            return Err(invalid(
                "encoding_format",
                "must be \"float\" or \"base64\"",
            ))
        }
    };
    let mut native = Map::new();
    native.insert("model".into(), json!(model));
    native.insert("input".into(), input);
    match field(req, "dimensions") {
        None => {}
        Some(d) if d.as_u64().is_some_and(|n| n > 0) => {
            native.insert("dimensions".into(), d.clone());
        }
        Some(_) => return Err(type_err("dimensions", "a positive integer")),
    }
    Ok(EmbedRequest {
        native,
        model,
        base64,
    })
}

/// OpenAI's embeddings list from Ollama's `/api/embed` answer.
/// `None` when the answer is not an embeddings answer.
pub fn embed_response(req: &EmbedRequest, native: &Value) -> Option<Value> {
    let vectors = native.get("embeddings")?.as_array()?;
    let mut data = Vec::with_capacity(vectors.len());
    for (i, v) in vectors.iter().enumerate() {
        let nums = v.as_array()?;
        let embedding = if req.base64 {
            let mut bytes = Vec::with_capacity(nums.len() * 4);
            for n in nums {
                let f = n.as_f64()? as f32;
                bytes.extend_from_slice(&f.to_le_bytes());
            }
            json!(base64(&bytes))
        } else {
            v.clone()
        };
        data.push(json!({"object": "embedding", "embedding": embedding, "index": i}));
    }
    let tokens = native
        .get("prompt_eval_count")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Some(json!({
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(A[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse_strict_object;

    fn req(s: &str) -> Result<EmbedRequest, TranslateError> {
        embed_request(&parse_strict_object(s.as_bytes()).expect("json"))
    }

    #[test]
    fn requests() {
        let r = req(r#"{"model":"nomic-embed-text","input":"hi","user":"x"}"#).expect("ok");
        assert_eq!(
            Value::Object(r.native),
            json!({"model":"nomic-embed-text","input":"hi"})
        );
        assert!(!r.base64);
        let r = req(r#"{"model":"m","input":["a","b"],"encoding_format":"base64","dimensions":4}"#)
            .expect("ok");
        assert_eq!(
            Value::Object(r.native),
            json!({"model":"m","input":["a","b"],"dimensions":4})
        );
        assert!(r.base64);
        for (body, want) in [
            (r#"{"model":"m"}"#, r#""input" is required"#),
            (r#"{"model":"m","input":[1,2]}"#, "\"input\" must be"),
            (r#"{"model":"m","input":[]}"#, "\"input\" must be"),
            (
                r#"{"model":"m","input":"x","encoding_format":"hex"}"#,
                "encoding_format",
            ),
            (r#"{"model":"m","input":"x","dimensions":-1}"#, "dimensions"),
            (r#"{"input":"x"}"#, r#""model" is required"#),
        ] {
            let e = req(body).expect_err(body).to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn responses_float_and_base64() {
        let native = json!({"model":"m","embeddings":[[1.0,-2.5],[0.0,0.5]],"prompt_eval_count":3});
        let r = req(r#"{"model":"m","input":["a","b"]}"#).expect("ok");
        let out = embed_response(&r, &native).expect("ok");
        assert_eq!(
            out,
            json!({"object":"list","data":[
                {"object":"embedding","embedding":[1.0,-2.5],"index":0},
                {"object":"embedding","embedding":[0.0,0.5],"index":1}],
                "model":"m","usage":{"prompt_tokens":3,"total_tokens":3}})
        );
        let r = req(r#"{"model":"m","input":"a","encoding_format":"base64"}"#).expect("ok");
        let out = embed_response(&r, &native).expect("ok");
        // 1.0f32 = 00 00 80 3f, -2.5f32 = 00 00 20 c0 (little-endian).
        assert_eq!(out["data"][0]["embedding"], "AACAPwAAIMA=");
        assert!(embed_response(&r, &json!({"error":"x"})).is_none());
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }
}
