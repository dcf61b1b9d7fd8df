//! The connection hand-off (README "Connection hand-off"; wire format in
//! `protocol::handoff`): on a unix socket the guest asks bridge-host, on a control
//! connection, to take accepted TCP connections itself, then passes each one's
//! descriptor (`SCM_RIGHTS`) instead of relaying its bytes. A host that says no, an old
//! host (HTTP 400) or a broken control connection means the relay, and the control
//! connection is asked for again with a backoff. A descriptor that could not be sent is
//! still the guest's: that connection is relayed.

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use protocol::handoff::{Answer, FD_BYTE, MAX_ANSWER, PREAMBLE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Notify;

/// Longest wait for the host's answer to the preamble.
const ANSWER_WAIT: Duration = Duration::from_secs(5);
/// First pause before asking again after a lost control connection; doubles up to
/// [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Pause before asking again a host that said no (or did not understand).
const RETRY_REFUSED: Duration = Duration::from_secs(60);

/// The line saying the hand-off is on.
pub const AGREED: &str = "hand-off agreed: bridge-host serves each connection directly";

/// What asking for the hand-off gave.
#[derive(Debug)]
pub enum Outcome {
    /// Agreed: the control connection.
    Agreed(UnixStream),
    /// The host said no (`handoff = false`, or too many control connections).
    Refused,
    /// The host did not understand (an older bridge-host answers HTTP 400).
    Foreign,
    /// No answer: the socket could not be reached, or the host said nothing in time.
    Failed(io::Error),
}

impl Outcome {
    /// A line for the operator: what the guest does now.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Agreed(_) => AGREED.into(),
            Outcome::Refused => {
                "hand-off refused by bridge-host (handoff = false?): relaying".into()
            }
            Outcome::Foreign => "hand-off not understood (an older bridge-host?): relaying".into(),
            Outcome::Failed(e) => format!("hand-off not agreed ({e}): relaying"),
        }
    }
}

/// Asks bridge-host at `path` for the hand-off.
pub async fn negotiate(path: &Path) -> Outcome {
    let ask = async {
        let mut s = UnixStream::connect(path).await?;
        s.write_all(PREAMBLE).await?;
        let mut got = Vec::new();
        let mut buf = [0u8; MAX_ANSWER];
        loop {
            let n = s.read(&mut buf).await?;
            got.extend_from_slice(&buf[..n]);
            return Ok(match Answer::of(&got) {
                Answer::Agreed => Outcome::Agreed(s),
                Answer::Refused => Outcome::Refused,
                Answer::Foreign => Outcome::Foreign,
                Answer::Partial if n == 0 => Outcome::Foreign,
                Answer::Partial => continue,
            });
        }
    };
    match tokio::time::timeout(ANSWER_WAIT, ask).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => Outcome::Failed(e),
        Err(_) => Outcome::Failed(io::Error::new(io::ErrorKind::TimedOut, "no answer in time")),
    }
}

/// The current control connection, shared by the accept loop and [`keep`].
#[derive(Debug, Default)]
pub struct Channel {
    current: Mutex<Option<Arc<UnixStream>>>,
    broken: Notify,
}

impl Channel {
    fn get(&self) -> Option<Arc<UnixStream>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, s: Option<Arc<UnixStream>>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    fn is(&self, s: &Arc<UnixStream>) -> bool {
        self.get().is_some_and(|c| Arc::ptr_eq(&c, s))
    }

    /// Hands `client` over; `false` when it stays the caller's to relay (no control
    /// connection, its buffer is full, or it failed: then it is dropped and asked for
    /// again).
    pub fn pass(&self, client: &TcpStream) -> bool {
        let Some(ctl) = self.get() else {
            return false;
        };
        let fds = [client.as_raw_fd()];
        let sent = sendmsg::<()>(
            ctl.as_raw_fd(),
            &[IoSlice::new(&[FD_BYTE])],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            None,
        );
        match sent {
            Ok(1) => true,
            Err(Errno::EAGAIN) => false,
            other => {
                eprintln!("bridge-guest: hand-off failed ({other:?}): relaying, asking again");
                if self.is(&ctl) {
                    self.set(None);
                }
                self.broken.notify_one();
                false
            }
        }
    }
}

/// Keeps a control connection to `path` while the guest runs, starting from `first`
/// (already reported): holds it until the host closes it or a send fails, then asks
/// again (backing off; a minute after a refusal). Says so on stderr when the state
/// changes.
pub async fn keep(ch: Arc<Channel>, path: PathBuf, first: Outcome) {
    let mut wait = RETRY_MIN;
    let mut agreed = matches!(first, Outcome::Agreed(_));
    let mut outcome = first;
    loop {
        let pause = match outcome {
            Outcome::Agreed(s) => {
                if !agreed {
                    eprintln!("bridge-guest: {AGREED}");
                    agreed = true;
                }
                hold(&ch, s).await;
                wait = RETRY_MIN;
                RETRY_MIN
            }
            other => {
                if agreed {
                    eprintln!("bridge-guest: {}", other.describe());
                    agreed = false;
                }
                if matches!(other, Outcome::Failed(_)) {
                    let w = wait;
                    wait = (wait * 2).min(RETRY_MAX);
                    w
                } else {
                    RETRY_REFUSED
                }
            }
        };
        tokio::time::sleep(pause).await;
        outcome = negotiate(&path).await;
    }
}

/// Offers `s` to the accept loop until the host closes it (it never writes after its
/// agreement, so readable means closed) or a send on it fails.
async fn hold(ch: &Channel, s: UnixStream) {
    let s = Arc::new(s);
    ch.set(Some(s.clone()));
    loop {
        tokio::select! {
            _ = s.readable() => break,
            _ = ch.broken.notified() => if !ch.is(&s) { break },
        }
    }
    if ch.is(&s) {
        ch.set(None);
    }
}
