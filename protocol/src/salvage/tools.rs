//! The tools a request offered, each with its compiled `parameters` schema: a salvaged
//! call must name one of them and its arguments must validate. The schema comes from the
//! sandbox, so it is compiled with no way to reach anything else: `$ref`s to URLs or
//! files are refused (no HTTP or file resolution is built in, and the retriever refuses
//! every URI), and `pattern` uses the linear-time `regex` engine.

use jsonschema::{PatternOptions, Retrieve, Uri, Validator};
use serde_json::{Map, Value};

/// One offered tool.
struct Tool {
    name: String,
    /// `None` when the tool's schema does not compile: no call to it is salvaged.
    validator: Option<Validator>,
}

/// The tools a request offered (`tools: [{"type":"function","function":{...}}]`, the
/// same in Ollama's and OpenAI's requests).
pub struct Tools {
    tools: Vec<Tool>,
}

impl std::fmt::Debug for Tools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.tools.iter().map(|t| &t.name))
            .finish()
    }
}

/// Refuses every external reference.
struct NoRetrieval;

impl Retrieve for NoRetrieval {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("external schema references are not followed ({uri})").into())
    }
}

impl Tools {
    /// The function tools of a request's `tools` value; `None` when it offers none.
    pub fn from_request(tools: &Value) -> Option<Tools> {
        let tools: Vec<Tool> = tools
            .as_array()?
            .iter()
            .filter_map(|t| {
                let f = t.get("function")?;
                if t.get("type").is_some_and(|ty| ty != "function") {
                    return None;
                }
                let name = f.get("name")?.as_str()?.to_owned();
                let schema = f
                    .get("parameters")
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"type": "object"}));
                Some(Tool {
                    name,
                    validator: compile(&schema),
                })
            })
            .collect();
        (!tools.is_empty()).then_some(Tools { tools })
    }

    /// Whether `name` is an offered tool (its schema aside).
    pub fn offers(&self, name: &str) -> bool {
        self.tools.iter().any(|t| t.name == name)
    }

    /// Whether some offered tool's name begins with `prefix`.
    pub fn named_from(&self, prefix: &str) -> bool {
        self.tools.iter().any(|t| t.name.starts_with(prefix))
    }

    /// Whether `args` are a valid call of the offered tool `name`.
    pub fn accepts(&self, name: &str, args: &Map<String, Value>) -> bool {
        let Some(tool) = self.tools.iter().find(|t| t.name == name) else {
            return false;
        };
        let Some(v) = &tool.validator else {
            return false;
        };
        v.is_valid(&Value::Object(args.clone()))
    }
}

/// A tool's schema, compiled without retrieval and with the linear-time regex engine.
fn compile(schema: &Value) -> Option<Validator> {
    if !schema.is_object() {
        return None;
    }
    jsonschema::options()
        .with_retriever(NoRetrieval)
        .with_pattern_options(PatternOptions::regex())
        .build(schema)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn weather() -> Tools {
        Tools::from_request(&json!([{"type": "function", "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "required": ["city"], "additionalProperties": false,
                "properties": {"city": {"type": "string"},
                               "unit": {"type": "string", "enum": ["c", "f"]}}}}}]))
        .unwrap()
    }

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn schema_rules() {
        let t = weather();
        assert!(t.accepts("get_weather", &args(json!({"city": "Paris"}))));
        assert!(t.accepts("get_weather", &args(json!({"city": "Paris", "unit": "c"}))));
        assert!(!t.accepts("get_weather", &args(json!({}))), "required");
        assert!(!t.accepts("get_weather", &args(json!({"city": 3}))), "type");
        assert!(
            !t.accepts("get_weather", &args(json!({"city": "P", "unit": "k"}))),
            "enum"
        );
        assert!(
            !t.accepts("get_weather", &args(json!({"city": "P", "x": 1}))),
            "extra"
        );
        assert!(!t.accepts("get_time", &args(json!({}))), "unknown tool");
    }

    #[test]
    fn odd_tool_lists() {
        assert!(Tools::from_request(&json!([])).is_none());
        assert!(Tools::from_request(&json!({"a": 1})).is_none());
        assert!(Tools::from_request(&json!([{"type": "retrieval"}])).is_none());
        let t = Tools::from_request(&json!([{"function": {"name": "now"}}])).unwrap();
        assert!(t.accepts("now", &Map::new()));
    }

    #[test]
    fn no_reference_is_followed() {
        for r in ["http://127.0.0.1:9/x.json", "file:///etc/passwd"] {
            let t = Tools::from_request(&json!([{"function": {"name": "f",
                "parameters": {"$ref": r}}}]))
            .unwrap();
            assert!(!t.accepts("f", &Map::new()), "{r}");
        }
    }
}
