//! What a salvaged call is, and why a parse of held text stopped short.

use serde_json::{Map, Value};

/// A salvaged call: an offered tool's name and arguments that validate.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    pub arguments: Map<String, Value>,
}

/// Why a parse stopped short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The text ended: more of it may complete the form.
    More,
    /// The text cannot be calls, whatever follows.
    No,
}
