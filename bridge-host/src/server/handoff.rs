//! The connection hand-off on unix listeners (README "Connection hand-off";
//! `protocol::handoff` has the wire format): telling a guest's control connection from
//! HTTP by its first byte, agreeing or refusing, then taking one descriptor per message
//! and trusting none of them: only a connected TCP stream socket is passed on to the
//! accept loop, which serves it like an accepted connection (`max_connections`
//! included). Anything else closes the control connection, is counted, and, where a
//! descriptor arrived, audited as `handoff_refused`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{getpeername, getsockopt, sockopt, SockType, SockaddrStorage};
use nix::sys::stat::{fstat, SFlag};
use protocol::audit::Peer;
use protocol::error::Reason;
use protocol::handoff::{is_preamble, AGREE, FD_BYTE, PREAMBLE, REFUSE};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{mpsc, watch, Semaphore};

use super::conn::{rejected, Seen};
use crate::os::sys::{recv_fds, socket_int, Message};
use crate::proxy::{current, CtxCell, SandboxCtx};

/// Control connections one listener holds at once; more are refused.
pub(super) const MAX_CONTROLS: usize = 8;
/// Descriptors one message may carry. A message with more is truncated by the kernel
/// (`MSG_CTRUNC`: it closes the rest) and closes the control connection.
const PER_MESSAGE: usize = 1;

/// A connection handed over, checked, for the accept loop.
pub(super) struct Handed {
    pub stream: TcpStream,
    /// The control connection's peer: who handed it over.
    pub peer: Option<Peer>,
}

/// What a unix connection's first bytes said.
pub(super) enum Sniffed {
    /// HTTP (or whatever hyper makes of it): nothing was consumed.
    Http(UnixStream),
    /// The hand-off preamble, consumed.
    Control(UnixStream),
    /// Closed, silent for `wait`, or a preamble gone wrong (`true`: count it).
    Gone(bool),
}

/// Looks at a unix connection's first byte (`MSG_PEEK`: HTTP costs one syscall more)
/// and, when it is NUL, reads the preamble; all within `wait`.
pub(super) async fn sniff(s: UnixStream, wait: Duration) -> Sniffed {
    let first = async {
        loop {
            s.readable().await?;
            let mut b = [0u8; 1];
            let peeked = s.try_io(Interest::READABLE, || {
                nix::sys::socket::recv(s.as_raw_fd(), &mut b, nix::sys::socket::MsgFlags::MSG_PEEK)
                    .map_err(io::Error::from)
            });
            match peeked {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some(b[0])),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    };
    let deadline = tokio::time::Instant::now() + wait;
    match tokio::time::timeout_at(deadline, first).await {
        Ok(Ok(Some(b))) if b != PREAMBLE[0] => return Sniffed::Http(s),
        Ok(Ok(Some(_))) => {}
        _ => return Sniffed::Gone(false),
    }
    let mut s = s;
    let mut buf = [0u8; PREAMBLE.len()];
    match tokio::time::timeout_at(deadline, s.read_exact(&mut buf)).await {
        Ok(Ok(_)) if is_preamble(&buf) == Some(true) => Sniffed::Control(s),
        _ => Sniffed::Gone(true),
    }
}

/// Serves a control connection until it ends, breaks the protocol, or the listener
/// stops: agrees (or refuses: `handoff = false`, too many control connections), then
/// passes each acceptable descriptor to the accept loop through `to`.
pub(super) async fn control(
    mut s: UnixStream,
    peer: Option<Peer>,
    cell: CtxCell,
    slots: Arc<Semaphore>,
    to: mpsc::Sender<Handed>,
    mut stop: watch::Receiver<bool>,
) {
    let ctx = current(&cell);
    let slot = slots.try_acquire_owned();
    if !ctx.sandbox.handoff || slot.is_err() {
        let why = if ctx.sandbox.handoff {
            "too_many_controls"
        } else {
            "handoff_off"
        };
        tracing::info!(sandbox = %ctx.sandbox.name, peer = ?peer, why, "hand-off refused; the guest relays");
        let _ = s.write_all(REFUSE).await;
        return;
    }
    if s.write_all(AGREE).await.is_err() {
        return;
    }
    tracing::debug!(sandbox = %ctx.sandbox.name, peer = ?peer, "hand-off agreed");
    drop(ctx);
    let mut bye = false;
    loop {
        let got = tokio::select! {
            _ = stop.changed() => return,
            m = next(&s) => m,
        };
        let ctx = current(&cell);
        let m = match got {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(sandbox = %ctx.sandbox.name, error = %e, "hand-off control connection failed");
                return;
            }
        };
        match checked_message(m) {
            Ok(None) => return, // the guest closed it
            Ok(Some(fd)) => match check_stream(fd) {
                Ok(stream) => {
                    if to.send(Handed { stream, peer }).await.is_err() {
                        return; // the listener is gone
                    }
                    if !ctx.sandbox.handoff && !bye {
                        // Turned off by a reload: say goodbye (the end of our side)
                        // and serve what the guest sent before it noticed, until it
                        // closes; it then asks again, is refused, and relays.
                        bye = true;
                        let _ = s.shutdown().await;
                    }
                }
                Err(why) => return hostile(&ctx, peer, why, true).await,
            },
            Err((why, fds)) => return hostile(&ctx, peer, why, fds).await,
        }
    }
}

/// Waits for and receives the next message (one data byte, room for one descriptor).
async fn next(s: &UnixStream) -> io::Result<Message> {
    loop {
        s.readable().await?;
        let mut b = [0u8; 1];
        match s.try_io(Interest::READABLE, || {
            recv_fds(s.as_fd(), &mut b, PER_MESSAGE)
        }) {
            Ok(mut m) => {
                if m.len == 1 && b[0] != FD_BYTE {
                    m.foreign = true;
                }
                return Ok(m);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The one descriptor of a well-formed message; `None` at the end of the stream; else
/// why the message breaks the protocol and whether descriptors came with it (they are
/// closed here).
fn checked_message(m: Message) -> Result<Option<OwnedFd>, (&'static str, bool)> {
    let fds = !m.fds.is_empty();
    if m.truncated {
        return Err(("truncated", fds));
    }
    if m.foreign {
        return Err(("garbage", fds));
    }
    let mut all = m.fds;
    match (m.len, all.len()) {
        (0, 0) => Ok(None),
        (_, 0) => Err(("no_descriptor", false)),
        (1, 1) => Ok(all.pop()),
        _ => Err(("too_many_descriptors", true)),
    }
}

/// Accepts a descriptor only if it is a connected TCP stream socket (IPv4 or IPv6, not
/// listening); returns it ready for the runtime, or why not.
pub(super) fn check_stream(fd: OwnedFd) -> Result<TcpStream, &'static str> {
    let st = fstat(fd.as_raw_fd()).map_err(|_| "not_a_socket")?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err("not_a_socket");
    }
    let domain = socket_int(fd.as_fd(), libc::SO_DOMAIN).map_err(|_| "not_inet")?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err("not_inet");
    }
    let stream = getsockopt(&fd, sockopt::SockType).ok() == Some(SockType::Stream)
        && socket_int(fd.as_fd(), libc::SO_PROTOCOL).ok() == Some(libc::IPPROTO_TCP);
    if !stream {
        return Err("not_tcp_stream");
    }
    if getsockopt(&fd, sockopt::AcceptConn).unwrap_or(true) {
        return Err("listening");
    }
    if getpeername::<SockaddrStorage>(fd.as_raw_fd()).is_err() {
        return Err("not_connected");
    }
    let std = std::net::TcpStream::from(fd);
    std.set_nonblocking(true).map_err(|_| "not_tcp_stream")?;
    let _ = std.set_nodelay(true);
    TcpStream::from_std(std).map_err(|_| "not_tcp_stream")
}

/// Counts and logs a control connection that broke the protocol (it is closed when the
/// caller returns); with `fds`, a descriptor was refused: counted and audited too.
async fn hostile(ctx: &SandboxCtx, peer: Option<Peer>, why: &'static str, fds: bool) {
    let sandbox = ctx.sandbox.name.as_str();
    let metrics = &ctx.shared.metrics.handoff;
    metrics.closed(sandbox, why);
    tracing::warn!(sandbox, peer = ?peer, why, descriptor = fds, "hand-off control connection broke the protocol; closed");
    if fds {
        metrics.refused(sandbox, why);
        let ex = rejected(ctx, peer, &Seen::default(), 0);
        ex.finish(0, Some(Reason::HandoffRefused), 0).await;
    }
}

/// Counts a control connection whose preamble went wrong.
pub(super) fn bad_preamble(ctx: &SandboxCtx, peer: Option<Peer>) {
    ctx.shared
        .metrics
        .handoff
        .closed(ctx.sandbox.name.as_str(), "bad_preamble");
    tracing::warn!(sandbox = %ctx.sandbox.name, peer = ?peer, "connection began like a hand-off preamble and was not one; closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(fd: impl Into<OwnedFd>) -> OwnedFd {
        fd.into()
    }

    #[tokio::test]
    async fn only_connected_tcp_streams_pass() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (accepted, _) = l.accept().unwrap();
        assert!(check_stream(owned(accepted)).is_ok());
        let file = tempfile::tempfile().unwrap();
        let (unix, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (r, _w) = nix::unistd::pipe().unwrap();
        let cases: [(OwnedFd, &str); 5] = [
            (owned(file), "not_a_socket"),
            (r, "not_a_socket"),
            (owned(unix), "not_inet"),
            (owned(udp), "not_tcp_stream"),
            (owned(l), "listening"),
        ];
        for (fd, why) in cases {
            assert_eq!(check_stream(fd).err(), Some(why));
        }
        drop(client);
    }

    #[test]
    fn messages_are_one_byte_with_one_descriptor() {
        let m = |len, fds: usize, truncated, foreign| Message {
            len,
            truncated,
            foreign,
            fds: (0..fds)
                .map(|_| owned(tempfile::tempfile().unwrap()))
                .collect(),
        };
        assert!(matches!(
            checked_message(m(1, 1, false, false)),
            Ok(Some(_))
        ));
        assert!(matches!(checked_message(m(0, 0, false, false)), Ok(None)));
        assert_eq!(
            checked_message(m(1, 0, false, false)).err(),
            Some(("no_descriptor", false))
        );
        assert_eq!(
            checked_message(m(1, 1, true, false)).err(),
            Some(("truncated", true))
        );
        assert_eq!(
            checked_message(m(1, 1, false, true)).err(),
            Some(("garbage", true))
        );
        assert_eq!(
            checked_message(m(1, 2, false, false)).err(),
            Some(("too_many_descriptors", true))
        );
    }
}
