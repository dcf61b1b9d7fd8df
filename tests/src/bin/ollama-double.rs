//! The Ollama test double as a process, for clients in other languages and benchmarks.
//! Prints `listening on 127.0.0.1:PORT` when ready (and writes the port to --port-file).

use std::time::Duration;

use bridge_tests::double::printed::Printed;
use bridge_tests::double::{Double, DoubleConfig, OpenAiFaults, Script, ToolPlacement};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum Placement {
    Intermediate,
    Final,
    Split,
    /// Like llama3.2:3b: calls written into the content as text, in the form the prompt
    /// names (`form=bare|fenced|tagged|python_tag|pythonic`; bare by default).
    Printed,
}

#[derive(Parser)]
#[command(about = "A stand-in for Ollama that behaves as Ollama does, quirks included")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Write the chosen port here once listening.
    #[arg(long)]
    port_file: Option<std::path::PathBuf>,
    /// Delay between streamed chunks, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pace_ms: u64,
    /// Where streamed tool calls go.
    #[arg(long, value_enum, default_value = "intermediate")]
    tool_calls: Placement,
    /// Fixed reply text (default: derived from the prompt).
    #[arg(long)]
    text: Option<String>,
    /// Do not reproduce the /v1 layer's dropped streamed tool calls.
    #[arg(long)]
    no_faults: bool,
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let script = Script {
        text: a.text,
        tools: match a.tool_calls {
            Placement::Intermediate => ToolPlacement::Intermediate,
            Placement::Final => ToolPlacement::Final,
            Placement::Split => ToolPlacement::Split,
            Placement::Printed => ToolPlacement::Printed(Printed::AskedFor),
        },
        pace: Duration::from_millis(a.pace_ms),
        ..Script::default()
    };
    let mut cfg = DoubleConfig {
        script,
        ..DoubleConfig::default()
    };
    if a.no_faults {
        cfg.faults = OpenAiFaults {
            drop_streamed_tool_calls: false,
            all_index_zero: false,
        };
    }
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .expect("bind");
    let d = Double::serve(listener, cfg);
    if let Some(p) = &a.port_file {
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, d.addr().port().to_string()).expect("write port file");
        std::fs::rename(&tmp, p).expect("rename port file");
    }
    println!("listening on {}", d.addr());
    let _ = tokio::signal::ctrl_c().await;
}
