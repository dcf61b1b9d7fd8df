//! Noticing that a client has gone while its request waits: for a `max_concurrent` slot,
//! in the upstream's fair queue, or for Ollama's answer after early headers.
//! The bridge allows half-close (a client may shut its sending side after the request
//! and still read the answer), so reading an end of stream proves nothing; a socket whose
//! peer closed entirely reports a hang-up (`EPOLLHUP`), which a half-close does not.
//! hyper owns the connection's stream, so the watch uses a second descriptor of the same
//! socket, cloned at accept — only on unix-socket listeners where a request may wait
//! (`queue_timeout`, or a fair queue: `[upstream] max_parallel` not `"off"`), as it costs
//! one descriptor per connection.

use std::io;
use std::sync::Arc;

use tokio::io::Interest;
use tokio::net::UnixStream;

/// A second handle on a connection's socket, only for noticing the peer's close.
#[derive(Clone, Debug)]
pub struct Hangup(Arc<std::os::unix::net::UnixStream>);

impl Hangup {
    /// Clones the socket of `s`; returns the stream (for hyper) and the watch.
    pub fn watch(s: UnixStream) -> io::Result<(UnixStream, Hangup)> {
        let std = s.into_std()?;
        let clone = std.try_clone()?;
        Ok((UnixStream::from_std(std)?, Hangup(Arc::new(clone))))
    }

    /// Resolves once the client closed the connection entirely (never on a half-close).
    pub async fn gone(&self) {
        // A descriptor of our own for the wait, so clearing its readiness below never
        // touches the readiness hyper relies on.
        let own = self.0.try_clone().and_then(UnixStream::from_std);
        let Ok(s) = own else {
            return std::future::pending().await;
        };
        loop {
            match s.ready(Interest::WRITABLE).await {
                Ok(r) if r.is_write_closed() => return,
                Ok(_) => {
                    // Writable is not news: clear it and wait for the next change.
                    let _ = s.try_io(Interest::WRITABLE, || {
                        Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock))
                    });
                }
                Err(_) => return,
            }
        }
    }
}

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
