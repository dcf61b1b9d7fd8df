//! Runs inside a network sandbox (bwrap --unshare-net) as an agent would: talks to
//! `127.0.0.1:11434` (bridge-guest) and tries the host's Ollama port directly.
//! Prints one JSON object with what it saw.

use bridge_tests::http::{collect, post, req, send_tcp};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// Where the agent expects Ollama.
    #[arg(long, default_value = "127.0.0.1:11434")]
    via: std::net::SocketAddr,
    /// The host's Ollama port, which must not be reachable from inside.
    #[arg(long)]
    direct: u16,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = Args::parse();
    let (tags_status, _, tags) = collect(
        send_tcp(a.via, req("GET", "/api/tags", ""))
            .await
            .expect("tags"),
    )
    .await;
    let tags: Value = serde_json::from_slice(&tags).unwrap_or(Value::Null);
    let models: Vec<Value> = tags["models"]
        .as_array()
        .map(|m| m.iter().map(|x| x["name"].clone()).collect())
        .unwrap_or_default();
    let chat = post(
        "/api/chat",
        &json!({"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "hello from the sandbox"}]}),
    );
    let (chat_status, _, body) = collect(send_tcp(a.via, chat).await.expect("chat")).await;
    let lines: Vec<Value> = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    let denied = post(
        "/api/chat",
        &json!({"model": "llama3.3:70b", "messages": []}),
    );
    let (denied_status, _, _) = collect(send_tcp(a.via, denied).await.expect("denied")).await;
    let direct = match tokio::net::TcpStream::connect(("127.0.0.1", a.direct)).await {
        Ok(_) => "connected".to_owned(),
        Err(e) => format!("failed: {e}"),
    };
    let out = json!({
        "tags_status": tags_status,
        "models": models,
        "chat_status": chat_status,
        "chat_lines": lines.len(),
        "chat_done": lines.last().map(|l| l["done"].clone()),
        "chat_text": lines.iter().filter_map(|l| l["message"]["content"].as_str()).collect::<String>(),
        "denied_status": denied_status,
        "direct": direct,
    });
    println!("{out}");
}
