//! Tool-call salvage: small models with weak templates (llama3.2:3b is the classic) print
//! their tool calls into the reply's text instead of emitting them as calls. When the
//! request offered `tools`, the [`Recogniser`] is fed the reply's content deltas and
//! turns such text into real calls: strictly (every call names an offered tool and its
//! arguments validate against that tool's `parameters` schema, else the text is left
//! exactly as written: all or nothing), and without delaying text that cannot be a call.
//!
//! - [`Recogniser`]: the incremental part, fed text deltas.
//! - [`ChatSalvage`]: Ollama's `/api/chat` NDJSON lines through a recogniser (the host's
//!   native relay and its OpenAI translation both use it).
//! - [`Tools`]: the offered tools and their compiled schemas.

mod call;
mod native;
mod parse;
mod python;
mod recognise;
mod tools;

pub use call::Call;
pub use native::ChatSalvage;
pub use recognise::{End, Recogniser, MAX_HOLD};
pub use tools::Tools;

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
