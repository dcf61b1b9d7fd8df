//! The connection hand-off's wire protocol on a unix listener (README "Connection
//! hand-off"): the guest opens a control connection and sends [`PREAMBLE`], which can
//! never start an HTTP request (its first byte is NUL); the host answers one line,
//! [`AGREE`] or [`REFUSE`]. After an agreement every message on the control connection is
//! one byte, [`FD_BYTE`], carrying exactly one descriptor (`SCM_RIGHTS`): an accepted TCP
//! connection the host now serves itself. The host never writes again, but may end its
//! side (EOF) to say goodbye (its listener's `handoff` was turned off): the guest then
//! stops passing and closes, and the host serves what it had sent until that close.
//! The guest never sends anything else. An old host answers the preamble with HTTP 400, which the guest
//! reads as a refusal.

/// What a guest sends first on a control connection.
pub const PREAMBLE: &[u8] = b"\0ollama-bridge handoff 1\n";
/// The host's answer when it takes connections on this listener.
pub const AGREE: &[u8] = b"ollama-bridge handoff ok\n";
/// The host's answer when it does not (`handoff = false`, or too many control
/// connections); it then closes the connection.
pub const REFUSE: &[u8] = b"ollama-bridge handoff no\n";
/// The data byte of every descriptor-carrying message.
pub const FD_BYTE: u8 = b'F';
/// Longest answer line a guest reads before giving up.
pub const MAX_ANSWER: usize = 64;

/// What a guest makes of the host's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The host agreed: pass descriptors.
    Agreed,
    /// The host said no.
    Refused,
    /// Not this protocol (an old host's HTTP 400, or anything else): relay.
    Foreign,
    /// Need more bytes.
    Partial,
}

impl Answer {
    /// Classifies the bytes read so far (a line ends with `\n`).
    pub fn of(read: &[u8]) -> Answer {
        let Some(end) = read.iter().position(|&b| b == b'\n') else {
            return if read.len() >= MAX_ANSWER
                || !AGREE.starts_with(read) && !REFUSE.starts_with(read)
            {
                Answer::Foreign
            } else {
                Answer::Partial
            };
        };
        match &read[..=end] {
            l if l == AGREE && read.len() == AGREE.len() => Answer::Agreed,
            l if l == REFUSE => Answer::Refused,
            _ => Answer::Foreign,
        }
    }
}

/// Whether a connection's first bytes are the hand-off preamble: `Some(true)` when they
/// are, `Some(false)` when they cannot be, `None` when more bytes are needed. A first
/// byte other than NUL is HTTP (or garbage hyper answers), decided from one byte.
pub fn is_preamble(first: &[u8]) -> Option<bool> {
    let n = first.len().min(PREAMBLE.len());
    if first[..n] != PREAMBLE[..n] {
        return Some(false);
    }
    (first.len() >= PREAMBLE.len()).then_some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preamble_is_never_http() {
        assert_eq!(PREAMBLE[0], 0);
        assert_eq!(is_preamble(b"GET / HTTP/1.1\r\n"), Some(false));
        assert_eq!(is_preamble(b"\0"), None);
        assert_eq!(is_preamble(b"\0ollama-bridge"), None);
        assert_eq!(is_preamble(b"\0ollama-bridge handoff 2\n"), Some(false));
        assert_eq!(is_preamble(PREAMBLE), Some(true));
    }

    #[test]
    fn answers() {
        assert_eq!(Answer::of(AGREE), Answer::Agreed);
        assert_eq!(Answer::of(REFUSE), Answer::Refused);
        assert_eq!(Answer::of(&AGREE[..5]), Answer::Partial);
        assert_eq!(Answer::of(b""), Answer::Partial);
        assert_eq!(Answer::of(b"HTTP/1.1 400 Bad Request\r\n"), Answer::Foreign);
        assert_eq!(Answer::of(b"HTTP/1.1 40"), Answer::Foreign);
        // Bytes after the agreement would be a protocol the guest does not know.
        assert_eq!(Answer::of(b"ollama-bridge handoff ok\nx"), Answer::Foreign);
        assert_eq!(Answer::of(&[b'o'; MAX_ANSWER]), Answer::Foreign);
    }
}
