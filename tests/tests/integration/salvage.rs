//! Tool-call salvage through the whole chain (client → bridge-guest → bridge-host → the
//! double's llama3.2:3b-like model, which prints its calls as text in each form, cut at
//! awkward places): native `/api/chat` streamed and not, `/v1/chat/completions`
//! streamed and not; replies that are not valid calls come back exactly as written;
//! `tool_salvage = false`; plain text is not held back.

use bridge_tests::double::printed::{pieces, Printed};
use bridge_tests::double::{Double, DoubleConfig, Script, ToolPlacement};
use bridge_tests::harness::{config, socket, Guest, Host};
use bridge_tests::http::{ndjson, next_data, post, rest, send_tcp, sse_events};
use bridge_tests::oai::{
    assert_two_calls, content, deltas, finish_reason, sandbox, send, tools, PINNED,
};
use serde_json::{json, Value};

const MODEL: &str = "llama3.2:3b";

/// The double, a host with sandbox "agent" and `extra` config, and a guest.
async fn chain_with(extra: &str) -> (Double, Host, Guest) {
    let double = Double::start(DoubleConfig::default()).await;
    let cfg = config(
        &double.url(),
        &[("agent", &sandbox())],
        &format!("{PINNED}{extra}"),
    );
    let host = Host::start(&cfg).await;
    let guest = Guest::start(&socket(&host, "agent")).await;
    (double, host, guest)
}

fn printing(double: &Double, form: Printed, text: Option<&str>) {
    double.set_script(Script {
        tools: ToolPlacement::Printed(form),
        text: text.map(str::to_owned),
        ..Script::default()
    });
}

fn native_chat(stream: bool, with_tools: bool) -> Value {
    let mut v = json!({"model": MODEL, "stream": stream, "messages": [
        {"role": "user", "content": "Weather and time in Paris?"}]});
    if with_tools {
        v["tools"] = tools();
    }
    v
}

fn oai_chat(stream: bool) -> Value {
    native_chat(stream, true)
}

/// What the sandbox's client got on `/api/chat`: the content, and the calls from every
/// chunk (as `[name, arguments]`).
async fn native(guest: &Guest, body: &Value) -> (String, Vec<Value>) {
    let (status, _, bytes) = send(guest.addr, "/api/chat", body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let lines = ndjson(&bytes);
    assert_eq!(lines.last().unwrap()["done"], true, "{lines:?}");
    let mut text = String::new();
    let mut calls = Vec::new();
    for l in &lines {
        text.push_str(l["message"]["content"].as_str().unwrap_or(""));
        for c in l["message"]["tool_calls"].as_array().into_iter().flatten() {
            let id = c["id"].as_str().unwrap();
            assert!(id.starts_with("call_") && id.len() == 13, "{c}");
            calls.push(json!([c["function"]["name"], c["function"]["arguments"]]));
        }
    }
    (text, calls)
}

fn two_calls() -> Vec<Value> {
    vec![
        json!(["get_weather", {"city": "Paris"}]),
        json!(["get_time", {"timezone": "UTC"}]),
    ]
}

/// The text the model writes before its calls.
fn lead(form: Printed) -> &'static str {
    match form {
        Printed::Fenced => "I'll look that up for you.\n",
        _ => "",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_becomes_tool_calls_native_and_openai() {
    let (double, host, guest) = chain_with("").await;
    for form in Printed::FORMS {
        printing(&double, form, None);
        for stream in [true, false] {
            let ctx = format!("{form:?}, stream {stream}");
            let (text, calls) = native(&guest, &native_chat(stream, true)).await;
            assert_eq!(text, lead(form), "{ctx}");
            assert_eq!(calls, two_calls(), "{ctx}");
        }
        // OpenAI, streamed: delta.tool_calls and finish_reason tool_calls.
        let (status, _, body) = send(guest.addr, "/v1/chat/completions", &oai_chat(true)).await;
        assert_eq!(status, 200, "{form:?}");
        let events = sse_events(&body);
        assert_eq!(content(&events), lead(form), "{form:?}");
        let calls: Vec<Value> = deltas(&events, "tool_calls")
            .iter()
            .flat_map(|c| c.as_array().unwrap().clone())
            .collect();
        assert_two_calls(&calls, &format!("{form:?}"));
        assert_eq!(
            finish_reason(&events).as_deref(),
            Some("tool_calls"),
            "{form:?}"
        );
        // OpenAI, not streamed.
        let (status, _, body) = send(guest.addr, "/v1/chat/completions", &oai_chat(false)).await;
        assert_eq!(status, 200, "{form:?}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{form:?}: {v}");
        let calls: Vec<Value> = choice["message"]["tool_calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                assert_eq!(c["type"], "function", "{form:?}");
                let args: Value =
                    serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap();
                json!([c["function"]["name"], args])
            })
            .collect();
        assert_eq!(calls, two_calls(), "{form:?}");
    }
    // Each of those answers recorded its two salvaged calls.
    let recs: Vec<Value> = host
        .audit_records()
        .into_iter()
        .filter(|r| r["model"] == MODEL)
        .collect();
    assert_eq!(recs.len(), Printed::FORMS.len() * 4);
    assert!(
        recs.iter().all(|r| r["tool_calls_salvaged"] == 2),
        "{recs:?}"
    );
}

/// Replies that are not valid calls of the offered tools come back exactly as written
/// (and, in the same chain, a valid one is salvaged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_that_are_not_calls_come_back_as_written() {
    let (double, host, guest) = chain_with("").await;
    let replies = [
        // An unknown tool.
        r#"{"name": "get_wether", "parameters": {"city": "Paris"}}"#,
        // Arguments that break the schema (enum).
        "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"timezone\": \"Mars\"}}\n</tool_call>",
        // Required property missing.
        r#"[get_weather(town="Paris")]"#,
        // A python block.
        "Here is how:\n```python\nget_weather(city=\"Paris\")\n```",
    ];
    for reply in replies {
        printing(&double, Printed::Verbatim, Some(reply));
        for stream in [true, false] {
            let (text, calls) = native(&guest, &native_chat(stream, true)).await;
            assert_eq!(text, reply, "stream {stream}");
            assert!(calls.is_empty(), "{reply}: {calls:?}");
        }
        let (_, _, body) = send(guest.addr, "/v1/chat/completions", &oai_chat(true)).await;
        let events = sse_events(&body);
        assert_eq!(content(&events), reply);
        assert_eq!(finish_reason(&events).as_deref(), Some("stop"));
    }
    // JSON content with no tools offered: as written, although it names a tool.
    let call = r#"{"name": "get_weather", "parameters": {"city": "Paris"}}"#;
    printing(&double, Printed::Verbatim, Some(call));
    let (text, calls) = native(&guest, &native_chat(true, false)).await;
    assert_eq!((text.as_str(), calls.len()), (call, 0));
    // OpenAI's `tool_choice: "none"` (the translation drops the tools): as written.
    let mut none = oai_chat(true);
    none["tool_choice"] = json!("none");
    let (_, _, body) = send(guest.addr, "/v1/chat/completions", &none).await;
    let events = sse_events(&body);
    assert_eq!(content(&events), call);
    assert_eq!(finish_reason(&events).as_deref(), Some("stop"));
    // The same text with the tools offered is a call.
    let (text, calls) = native(&guest, &native_chat(true, true)).await;
    assert_eq!(text, "");
    assert_eq!(calls, vec![json!(["get_weather", {"city": "Paris"}])]);
    let salvaged: Vec<Value> = host
        .audit_records()
        .iter()
        .filter_map(|r| r.get("tool_calls_salvaged").cloned())
        .collect();
    assert_eq!(salvaged, vec![json!(1)], "only the last answer salvaged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_salvage_false_leaves_the_text() {
    let (double, host, guest) =
        chain_with("\n[model.\"llama3.2:*\"]\ntool_salvage = false\n").await;
    printing(&double, Printed::Bare, None);
    let (text, calls) = native(&guest, &native_chat(true, true)).await;
    assert!(calls.is_empty());
    assert!(text.starts_with("{\"name\":\"get_weather\""), "{text}");
    // Another model under the default is salvaged.
    let mut q = native_chat(true, true);
    q["model"] = json!("qwen2.5:7b");
    let (_, calls) = native(&guest, &q).await;
    assert_eq!(calls, two_calls());
    let recs = host.audit_records();
    assert!(
        recs[0].get("tool_calls_salvaged").is_none(),
        "{:?}",
        recs[0]
    );
    assert_eq!(recs[1]["tool_calls_salvaged"], 2);
}

/// Plain text with tools offered is not held: the first chunk reaches the client while
/// the double still holds back the rest (it sends each next chunk only when released).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_with_tools_is_not_held_back() {
    let (double, _host, guest) = chain_with("").await;
    let text = "Paris is sunny today, and it is noon there.";
    double.set_script(Script {
        tools: ToolPlacement::Printed(Printed::Verbatim),
        text: Some(text.into()),
        gated: true,
        ..Script::default()
    });
    for (path, body) in [
        ("/api/chat", native_chat(true, true)),
        ("/v1/chat/completions", oai_chat(true)),
    ] {
        let before = double.emitted();
        let resp = send_tcp(guest.addr, post(path, &body)).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let first = next_data(&mut body).await.expect("a first chunk");
        assert_eq!(
            double.emitted(),
            before + 1,
            "{path}: the double sent one chunk"
        );
        let first = String::from_utf8_lossy(&first).into_owned();
        assert!(first.contains("Paris "), "{path}: {first}");
        // The rest: its pieces after the first, and the final chunk.
        double.release(pieces(text).len());
        let mut all = first.into_bytes();
        all.extend(rest(&mut body).await);
        let got = if path == "/api/chat" {
            ndjson(&all)
                .iter()
                .map(|l| l["message"]["content"].as_str().unwrap().to_owned())
                .collect()
        } else {
            content(&sse_events(&all))
        };
        assert_eq!(got, text, "{path}");
    }
    // While the same chain does hold, and salvage, a call.
    printing(&double, Printed::Bare, None);
    let (text, calls) = native(&guest, &native_chat(true, true)).await;
    assert_eq!((text.as_str(), calls), ("", two_calls()));
}
