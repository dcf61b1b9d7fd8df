//! Tool-call salvage on the host: which answers get it (`/api/chat`, and
//! `/v1/chat/completions` served through it, when the request offered tools and the
//! model's `tool_salvage` is on), and the native relay's [`Transform`] over
//! `protocol::salvage::ChatSalvage`. The OpenAI translation runs the same
//! `ChatSalvage` before its own (`proxy/openai.rs`).

use std::sync::Arc;

use bytes::Bytes;
use protocol::error::{BridgeError, Reason};
use protocol::openai::LineSplitter;
use protocol::route::Route;
use protocol::salvage::{ChatSalvage, Tools};
use protocol::ModelName;

use super::check::Checked;
use super::ctx::SandboxCtx;
use super::record::Exchange;
use super::relay::{StreamKind, Transform};

/// Longest NDJSON line read from Ollama.
const MAX_LINE: usize = 16 << 20;

/// The salvage for this request's answer, if it gets one.
pub fn for_request(ctx: &SandboxCtx, c: &Checked, ex: &Exchange) -> Option<ChatSalvage> {
    if !matches!(c.route, Route::Chat | Route::OaiChat) {
        return None;
    }
    let model = ModelName::parse(ex.rec.model.as_deref()?).ok()?;
    if !ctx.config.tool_salvage(&model) {
        return None;
    }
    let body = c.body.as_ref()?;
    if c.route == Route::OaiChat && body.field("tool_choice").is_some_and(|t| t == "none") {
        // The translation drops the tools: the client wants no calls.
        return None;
    }
    let tools = Tools::from_request(&body.field("tools")?)?;
    Some(ChatSalvage::new(Arc::new(tools), ex.id()))
}

/// Runs every NDJSON line of `/api/chat`'s answer (streamed or not) through `chat`.
pub struct NativeSalvage {
    lines: LineSplitter,
    chat: ChatSalvage,
    kind: StreamKind,
    failed: bool,
}

impl NativeSalvage {
    /// For an answer of `kind` (its error lines are written in that format).
    pub fn boxed(chat: ChatSalvage, kind: StreamKind) -> Box<dyn Transform> {
        Box::new(NativeSalvage {
            lines: LineSplitter::new(MAX_LINE),
            chat,
            kind,
            failed: false,
        })
    }
}

impl Transform for NativeSalvage {
    fn feed(&mut self, data: &[u8]) -> Bytes {
        if self.failed {
            return Bytes::new();
        }
        let mut out = Vec::new();
        let chat = &mut self.chat;
        if let Err(e) = self.lines.feed(data, |l| chat.line(l, &mut out)) {
            let err = BridgeError::new(Reason::UpstreamError, e.to_string());
            self.chat.finish(&mut out);
            out.extend(self.kind.error_frame(&err).unwrap_or_default());
            self.failed = true;
        }
        Bytes::from(out)
    }

    fn finish(&mut self) -> Bytes {
        let mut out = Vec::new();
        if !self.failed {
            if let Some(l) = self.lines.finish() {
                self.chat.line(&l, &mut out);
            }
            self.chat.finish(&mut out);
        }
        Bytes::from(out)
    }

    fn fail(&mut self, err: &BridgeError) -> Bytes {
        let mut out = Vec::new();
        if !self.failed {
            self.chat.finish(&mut out);
            out.extend(self.kind.error_frame(err).unwrap_or_default());
        }
        Bytes::from(out)
    }

    fn failed(&self) -> bool {
        self.failed
    }

    fn tool_calls_salvaged(&self) -> usize {
        self.chat.salvaged()
    }
}
