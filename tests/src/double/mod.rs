//! The Ollama test double: native chat/generate/embed/tags/show/ps/version, NDJSON
//! streaming at a controllable pace (or gated chunk by chunk), tool calls in an
//! intermediate or in the final chunk, the Host check, num_ctx truncation visible in
//! `prompt_eval_count`, and the OpenAI layer's faults. It records every request.
//! For benchmarks it can stamp each streamed chunk with its send time (`stamp`).

// Handlers return a ready error response early; its size does not matter here.
#![allow(clippy::result_large_err)]
mod models;
mod native;
mod openai;
pub mod printed;
mod server;
pub mod stamp;
pub mod tokenize;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;

pub use native::THINKING;
pub use server::ChanBody;

/// A model the double "has".
#[derive(Debug, Clone)]
pub struct DoubleModel {
    pub name: String,
    pub context_length: u64,
    pub embedding: bool,
}

/// Where streamed tool calls are put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolPlacement {
    /// In a `done:false` chunk after the content (Ollama ≥ 0.8 usually).
    Intermediate,
    /// Only in the final `done:true` chunk (the "native" llama-server path since 0.30).
    Final,
    /// One call per intermediate chunk.
    Split,
    /// No `tool_calls`: like llama3.2:3b, the calls are written into the content in
    /// this form, cut at awkward places ([`printed`]). `Verbatim` writes the script's
    /// text (with tools offered, however it looks). After a tool's result (nothing to
    /// call) the other forms answer in prose, like every placement.
    Printed(printed::Printed),
}

/// How the double answers chat and generate requests.
#[derive(Debug, Clone)]
pub struct Script {
    /// The reply text; `None` derives one from the prompt.
    pub text: Option<String>,
    /// Where tool calls go when the request offers tools.
    pub tools: ToolPlacement,
    /// Write an `{"error":...}` line after this many chunks and end the stream.
    pub error_after: Option<usize>,
    /// Go silent (keep the connection open) after this many chunks.
    pub stall_after: Option<usize>,
    /// Never answer the headers.
    pub stall_headers: bool,
    /// A model load: every POST waits for [`Double::release_headers`] before its headers.
    pub hold_headers: bool,
    /// A model load of a fixed length: every POST waits this long before its headers.
    pub head_delay: Duration,
    /// After the wait, answer this status with `{"error": message}` (a load that failed).
    pub head_error: Option<(u16, String)>,
    /// Delay between chunks.
    pub pace: Duration,
    /// Wait for `Double::release` before each chunk after the first.
    pub gated: bool,
    /// Write each chunk in frames of at most this many bytes (lines split across frames).
    pub fragment: Option<usize>,
    /// Benchmarks: streamed chat chunks carry their send time as content, at a fixed
    /// `pace` (see [`stamp`]); `gated`, `fragment`, errors and stalls do not apply.
    pub stamp: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            text: None,
            tools: ToolPlacement::Intermediate,
            error_after: None,
            stall_after: None,
            stall_headers: false,
            hold_headers: false,
            head_delay: Duration::ZERO,
            head_error: None,
            pace: Duration::ZERO,
            gated: false,
            fragment: None,
            stamp: false,
        }
    }
}

/// The faults of Ollama's `/v1` layer the double reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenAiFaults {
    /// Streamed replies with tools present lose their tool calls (finish_reason "stop").
    pub drop_streamed_tool_calls: bool,
    /// Every streamed tool call gets `index: 0`.
    pub all_index_zero: bool,
}

impl Default for OpenAiFaults {
    fn default() -> Self {
        OpenAiFaults {
            drop_streamed_tool_calls: true,
            all_index_zero: false,
        }
    }
}

/// The double's configuration.
#[derive(Debug, Clone)]
pub struct DoubleConfig {
    pub models: Vec<DoubleModel>,
    /// Context length when a request sets no `num_ctx` (Ollama < 24 GiB VRAM: 4096).
    pub default_num_ctx: u64,
    pub script: Script,
    pub faults: OpenAiFaults,
    pub version: String,
    /// Like `OLLAMA_NUM_PARALLEL`: at most this many POSTs are worked on at once (from
    /// before their headers until a non-streamed answer is built); the rest wait in
    /// arrival order, as in Ollama's scheduler. `None`: no limit.
    pub parallel: Option<usize>,
    /// The models `/api/ps` lists as loaded (names as in `models`); `None`: every one.
    pub loaded: Option<Vec<String>>,
}

impl Default for DoubleConfig {
    fn default() -> Self {
        let m = |name: &str, ctx, embedding| DoubleModel {
            name: name.into(),
            context_length: ctx,
            embedding,
        };
        DoubleConfig {
            models: vec![
                m("qwen2.5:7b", 32768, false),
                m("qwen2.5:latest", 32768, false),
                m("llama3.2:3b", 131072, false),
                m("llama3.3:70b", 131072, false),
                m("nomic-embed-text:latest", 8192, true),
                m("gpt-oss:120b-cloud", 131072, false),
            ],
            default_num_ctx: 4096,
            script: Script::default(),
            faults: OpenAiFaults::default(),
            version: "0.33.0".into(),
            parallel: None,
            loaded: None,
        }
    }
}

/// One request as the double received it.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    #[serde(serialize_with = "ser_lossy")]
    pub body: Vec<u8>,
}

fn ser_lossy<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

impl Recorded {
    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("recorded body is JSON")
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Shared state of a running double.
pub struct State {
    pub config: Mutex<DoubleConfig>,
    pub requests: Mutex<Vec<Recorded>>,
    pub gate: Arc<Semaphore>,
    /// Permits for requests held before their headers (`Script::hold_headers`).
    pub heads: Arc<Semaphore>,
    /// Requests held before their headers right now.
    pub held: tokio::sync::watch::Sender<u64>,
    /// Requests ever held before their headers (only grows).
    pub held_total: tokio::sync::watch::Sender<u64>,
    /// Chunks written so far, across all streams.
    pub emitted: tokio::sync::watch::Sender<u64>,
    /// Set when the double stops: every connection closes.
    pub stopped: tokio::sync::watch::Sender<bool>,
    /// `DoubleConfig::parallel`: a FIFO semaphore (tokio's is fair).
    pub parallel: Option<Arc<Semaphore>>,
}

/// A running double.
pub struct Double {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Double {
    /// Starts the double on 127.0.0.1, port 0.
    pub async fn start(config: DoubleConfig) -> Double {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the double");
        Double::serve(listener, config)
    }

    /// Serves on an already bound listener.
    pub fn serve(listener: tokio::net::TcpListener, config: DoubleConfig) -> Double {
        let addr = listener.local_addr().expect("local addr");
        let parallel = config.parallel.map(|n| Arc::new(Semaphore::new(n)));
        let state = Arc::new(State {
            parallel,
            config: Mutex::new(config),
            requests: Mutex::new(Vec::new()),
            gate: Arc::new(Semaphore::new(0)),
            heads: Arc::new(Semaphore::new(0)),
            held: tokio::sync::watch::channel(0).0,
            held_total: tokio::sync::watch::channel(0).0,
            emitted: tokio::sync::watch::channel(0).0,
            stopped: tokio::sync::watch::channel(false).0,
        });
        let task = tokio::spawn(server::serve(listener, state.clone()));
        Double { addr, state, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far for `path` (e.g. `/api/chat`).
    pub fn count(&self, path: &str) -> usize {
        let reqs = self.state.requests.lock().unwrap();
        reqs.iter().filter(|r| r.path == path).count()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Forgets recorded requests.
    pub fn clear(&self) {
        self.state.requests.lock().unwrap().clear();
    }

    /// Changes the reply script.
    pub fn set_script(&self, s: Script) {
        self.state.config.lock().unwrap().script = s;
    }

    /// Changes the `/v1` faults.
    pub fn set_faults(&self, f: OpenAiFaults) {
        self.state.config.lock().unwrap().faults = f;
    }

    /// Lets `n` more gated chunks out.
    pub fn release(&self, n: usize) {
        self.state.gate.add_permits(n);
    }

    /// Lets `n` requests held before their headers answer.
    pub fn release_headers(&self, n: usize) {
        self.state.heads.add_permits(n);
    }

    /// Requests held before their headers right now.
    pub fn held(&self) -> u64 {
        *self.state.held.borrow()
    }

    /// Waits until at least `n` requests are held before their headers.
    pub async fn wait_held(&self, n: u64) {
        let mut rx = self.state.held.subscribe();
        let _ = rx.wait_for(|&v| v >= n).await;
    }

    /// Waits until `n` requests in all have been held before their headers (released or
    /// not): unlike [`Self::wait_held`], a count that went up and down again is not missed.
    pub async fn wait_held_total(&self, n: u64) {
        let mut rx = self.state.held_total.subscribe();
        let _ = rx.wait_for(|&v| v >= n).await;
    }

    /// Waits until at most `n` requests are held before their headers (the others were
    /// released, or their connection closed).
    pub async fn wait_held_at_most(&self, n: u64) {
        let mut rx = self.state.held.subscribe();
        let _ = rx.wait_for(|&v| v <= n).await;
    }

    /// Chunks written so far, across all streams.
    pub fn emitted(&self) -> u64 {
        *self.state.emitted.borrow()
    }

    /// Waits until at least `n` chunks have been written in total.
    pub async fn wait_emitted(&self, n: u64) {
        let mut rx = self.state.emitted.subscribe();
        let _ = rx.wait_for(|&v| v >= n).await;
    }

    /// Stops serving (new connections are refused).
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        self.task.abort();
        self.state.stopped.send_replace(true);
    }
}
