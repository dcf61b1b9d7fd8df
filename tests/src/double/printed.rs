//! A model like llama3.2:3b under Ollama's template: offered tools, it writes its calls
//! into `message.content` as text (one of the forms small models use) instead of
//! `tool_calls`, and the text arrives cut at awkward places (inside a key, between
//! `<tool_` and `call>`).

use serde_json::{Map, Value};

/// How the calls are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Printed {
    /// `{"name": …, "parameters": {…}}`, one object per call on its own line.
    Bare,
    /// A sentence, then a ```` ```json ```` fence holding an array of calls.
    Fenced,
    /// `<tool_call>{…}</tool_call>` per call (Hermes/Qwen), arguments as a JSON string.
    Tagged,
    /// `<|python_tag|>{…}` (Llama 3.1), calls separated by `; `.
    PythonTag,
    /// `[get_weather(city="Paris"), …]` (Llama 3.2).
    Pythonic,
    /// The script's `text` as written, whatever it is (for replies that are not calls).
    Verbatim,
    /// The form the last user message names (`form=bare`, `fenced`, `tagged`,
    /// `python_tag`, `pythonic`; bare when it names none): one client process can ask
    /// for each form in turn.
    AskedFor,
}

impl Printed {
    pub const FORMS: [Printed; 5] = [
        Printed::Bare,
        Printed::Fenced,
        Printed::Tagged,
        Printed::PythonTag,
        Printed::Pythonic,
    ];
}

impl Printed {
    /// The form `prompt` asks for ([`Printed::AskedFor`]).
    pub fn asked_in(prompt: &str) -> Printed {
        let named = prompt
            .split_whitespace()
            .find_map(|w| w.strip_prefix("form="))
            .unwrap_or("bare");
        match named.trim_end_matches(|c: char| !c.is_alphanumeric() && c != '_') {
            "fenced" => Printed::Fenced,
            "tagged" => Printed::Tagged,
            "python_tag" => Printed::PythonTag,
            "pythonic" => Printed::Pythonic,
            _ => Printed::Bare,
        }
    }

    /// Its name in prompts and reports.
    pub fn name(self) -> &'static str {
        match self {
            Printed::Bare => "bare",
            Printed::Fenced => "fenced",
            Printed::Tagged => "tagged",
            Printed::PythonTag => "python_tag",
            Printed::Pythonic => "pythonic",
            Printed::Verbatim => "verbatim",
            Printed::AskedFor => "asked_for",
        }
    }
}

/// The reply text for `calls` (Ollama's shape: `{"function":{"name","arguments"}}`).
pub fn text(form: Printed, calls: &[Value], verbatim: Option<&str>, prompt: &str) -> String {
    let named = |c: &Value| -> (String, Value) {
        let f = &c["function"];
        (
            f["name"].as_str().unwrap_or("tool").to_owned(),
            f["arguments"].clone(),
        )
    };
    let obj = |c: &Value, key: &str| {
        let (name, args) = named(c);
        let mut m = Map::new();
        m.insert("name".into(), Value::String(name));
        m.insert(key.into(), args);
        serde_json::to_string(&Value::Object(m)).expect("json")
    };
    match form {
        Printed::AskedFor => text(Printed::asked_in(prompt), calls, verbatim, prompt),
        Printed::Verbatim => verbatim.unwrap_or("").to_owned(),
        Printed::Bare => calls
            .iter()
            .map(|c| obj(c, "parameters"))
            .collect::<Vec<_>>()
            .join("\n"),
        Printed::Fenced => {
            let items: Vec<String> = calls.iter().map(|c| obj(c, "arguments")).collect();
            format!(
                "I'll look that up for you.\n```json\n[{}]\n```",
                items.join(", ")
            )
        }
        Printed::Tagged => calls
            .iter()
            .map(|c| {
                let (name, args) = named(c);
                let args = Value::String(args.to_string());
                let call = serde_json::json!({"name": name, "arguments": args});
                format!("<tool_call>\n{call}\n</tool_call>")
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Printed::PythonTag => {
            let items: Vec<String> = calls.iter().map(|c| obj(c, "parameters")).collect();
            format!("<|python_tag|>{}", items.join("; "))
        }
        Printed::Pythonic => {
            let items: Vec<String> = calls
                .iter()
                .map(|c| {
                    let (name, args) = named(c);
                    let kw: Vec<String> = args
                        .as_object()
                        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", py(v))).collect())
                        .unwrap_or_default();
                    format!("{name}({})", kw.join(", "))
                })
                .collect();
            format!("[{}]", items.join(", "))
        }
    }
}

/// A JSON value as a Python literal.
fn py(v: &Value) -> String {
    match v {
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        Value::Array(a) => format!("[{}]", a.iter().map(py).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => {
            let items: Vec<String> = m.iter().map(|(k, v)| format!("{k:?}: {}", py(v))).collect();
            format!("{{{}}}", items.join(", "))
        }
        v => v.to_string(),
    }
}

/// Cuts `text` into streamed pieces at awkward places: 6 bytes first (`<tool_` of
/// `<tool_call>`), then 3, 5, 2, 7, 4 … (on char boundaries).
pub fn pieces(text: &str) -> Vec<String> {
    const CUTS: [usize; 6] = [6, 3, 5, 2, 7, 4];
    let mut out = Vec::new();
    let mut at = 0;
    let mut k = 0;
    while at < text.len() {
        let mut end = (at + CUTS[k % CUTS.len()]).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(text[at..end].to_owned());
        at = end;
        k += 1;
    }
    out
}
