//! Noticing that a client has gone while its request waits: for a `max_concurrent` slot,
//! in the upstream's fair queue, or for Ollama's answer after early headers.
//! The bridge allows half-close (a client may shut its sending side after the request
//! and still read the answer), so reading an end of stream proves nothing; a socket whose
//! peer closed entirely reports a hang-up (`EPOLLHUP`), which a half-close does not.
//! hyper owns the connection's stream, so the watch uses a second descriptor of the same
//! socket, cloned at accept — only on unix-socket listeners (and connections handed over
//! on them) where a request may wait
//! (`queue_timeout`, or a fair queue: `[upstream] max_parallel` not `"off"`), as it costs
//! one descriptor per connection.

use std::io;
use std::sync::Arc;

use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

/// A second handle on a connection's socket, only for noticing the peer's close.
#[derive(Clone, Debug)]
pub struct Hangup(Arc<Socket>);

#[derive(Debug)]
enum Socket {
    Unix(std::os::unix::net::UnixStream),
    Tcp(std::net::TcpStream),
}

impl Hangup {
    /// Clones the socket of `s`; returns the stream (for hyper) and the watch.
    pub fn watch(s: UnixStream) -> io::Result<(UnixStream, Hangup)> {
        let std = s.into_std()?;
        let clone = std.try_clone()?;
        Ok((
            UnixStream::from_std(std)?,
            Hangup(Arc::new(Socket::Unix(clone))),
        ))
    }

    /// The same for a TCP connection a guest handed over (`server::handoff`). A TCP peer
    /// that closed shows as a hang-up once both directions are shut, or on a reset.
    pub fn watch_tcp(s: TcpStream) -> io::Result<(TcpStream, Hangup)> {
        let std = s.into_std()?;
        let clone = std.try_clone()?;
        Ok((
            TcpStream::from_std(std)?,
            Hangup(Arc::new(Socket::Tcp(clone))),
        ))
    }

    /// Resolves once the client closed the connection entirely (never on a half-close).
    pub async fn gone(&self) {
        // A descriptor of our own for the wait, so clearing its readiness below never
        // touches the readiness hyper relies on.
        let waited = match &*self.0 {
            Socket::Unix(u) => match u.try_clone().and_then(UnixStream::from_std) {
                Ok(s) => wait_closed!(s),
                Err(e) => Err(e),
            },
            Socket::Tcp(t) => match t.try_clone().and_then(TcpStream::from_std) {
                Ok(s) => wait_closed!(s),
                Err(e) => Err(e),
            },
        };
        if waited.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Waits on a tokio stream `$s` until its write side reports closed; `Ok(())` then, or
/// `Ok(())` on a readiness error too (the socket is unusable): `Err` only comes from
/// cloning, above.
macro_rules! wait_closed {
    ($s:expr) => {{
        let s = $s;
        loop {
            match s.ready(Interest::WRITABLE).await {
                Ok(r) if r.is_write_closed() => break Ok::<(), io::Error>(()),
                Ok(_) => {
                    // Writable is not news: clear it and wait for the next change.
                    let _ = s.try_io(Interest::WRITABLE, || {
                        Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock))
                    });
                }
                Err(_) => break Ok(()),
            }
        }
    }};
}
use wait_closed;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_close_is_noticed_and_a_half_close_is_not() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let (_ours, h) = Hangup::watch(ours).unwrap();
        let wait = tokio::spawn({
            let h = h.clone();
            async move { h.gone().await }
        });
        theirs.shutdown().await.unwrap(); // half-close: still here
        tokio::task::yield_now().await;
        assert!(!wait.is_finished());
        drop(theirs);
        tokio::time::timeout(std::time::Duration::from_secs(60), wait)
            .await
            .expect("noticed")
            .unwrap();
    }
}
