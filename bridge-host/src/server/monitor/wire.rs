//! What the daemon and its privileged monitor say to each other: a request, then its
//! reply, as JSON in one message of `os::fdpass`, each tagged with the request's id. A
//! listener travels as the one descriptor of a `done` reply to `bind`.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The longest request (requests are small; a path is at most 4 KiB).
pub const MAX_REQUEST: usize = 64 * 1024;
/// The longest reply (the configuration file's text).
pub const MAX_REPLY: usize = 16 << 20;

/// What the daemon may ask. The monitor acts only on its configuration file and on the
/// sandboxes and sockets named there, whatever the daemon asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Re-read and validate the configuration file.
    Read,
    /// Open the listener of this sandbox of the configuration last read.
    Bind { sandbox: String },
    /// Set the socket mode and owner of this sandbox of the configuration last read.
    Perms { sandbox: String },
    /// Remove this socket, once a sandbox's listener, if nobody listens on it.
    Unlink { path: PathBuf },
}

/// The monitor's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// The file, read and valid.
    Config { text: String },
    /// The file could not be read.
    Unreadable { error: String },
    /// The file is not valid: one line per error.
    Invalid { errors: Vec<String> },
    /// Done (a listener, for `bind`, comes with it).
    Done,
    /// Not done, and why.
    Failed { error: String },
}

/// A request or reply with its request's id.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub id: u64,
    #[serde(flatten)]
    pub body: T,
}

/// The bytes of one message.
pub fn encode<T: Serialize>(id: u64, body: T) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&Envelope { id, body })
}

/// One message, read back.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<Envelope<T>> {
    serde_json::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip() {
        for r in [
            Request::Read,
            Request::Bind {
                sandbox: "a".into(),
            },
            Request::Perms {
                sandbox: "a".into(),
            },
            Request::Unlink {
                path: "/run/x.sock".into(),
            },
        ] {
            let back: Envelope<Request> = decode(&encode(7, r.clone()).unwrap()).unwrap();
            assert_eq!(back, Envelope { id: 7, body: r });
        }
        let bytes = encode(3, Reply::Failed { error: "no".into() }).unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"id":3,"reply":"failed","error":"no"}"#
        );
        assert!(decode::<Request>(&bytes).is_err(), "a reply is no request");
        assert!(decode::<Request>(br#"{"id":1,"op":"exec"}"#).is_err());
    }
}
