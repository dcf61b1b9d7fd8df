//! Records for requests hyper rejects before the service sees them: a malformed request
//! line or header (hyper answers 400 itself), a head larger than the read buffer (431),
//! a head the client cut off or did not finish within the header timeout (no answer).
//! The connection's byte stream is wrapped to see what arrived; when `serve_connection`
//! ends with such an error, one record is written — before the connection is closed
//! (the wrapper does not pass hyper's shutdown on), so a client that waits for the close
//! finds the record in the file.
//!
//! The wrapper also feeds every byte to the connection's [`Heads`], which sees each
//! request head as it was sent (hyper resolves repeated `Content-Length` and
//! `Content-Length` with `Transfer-Encoding` before the service could see them).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use protocol::audit::{AuditRecord, Endpoint, Peer, UNKNOWN};
use protocol::error::Reason;
use protocol::framing::{Flaw, Scanner};
use protocol::route::Route;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use super::deadline::Clock;
use crate::os::clock::unix_ms;
use crate::proxy::{Exchange, SandboxCtx};

/// Bytes of a connection's start kept to name the rejected request's method and path.
const PREFIX: usize = 512;

/// What arrived on a connection.
#[derive(Debug, Default)]
pub struct Seen {
    /// Bytes read in total.
    pub read: u64,
    /// The first bytes read.
    pub prefix: Vec<u8>,
    /// When the first byte arrived (UNIX ms, and as an instant).
    pub first: Option<(u64, Instant)>,
}

/// The framing verdicts of a connection's request heads, in order (`protocol::framing`):
/// fed by [`Observed`], taken by the service as hyper hands it each request.
#[derive(Debug, Clone)]
pub struct Heads(Arc<Mutex<Scanner>>);

impl Heads {
    /// For a connection whose heads hyper limits to `max_head` bytes.
    pub fn new(max_head: usize) -> Heads {
        Heads(Arc::new(Mutex::new(Scanner::new(max_head))))
    }

    fn scanner(&self) -> std::sync::MutexGuard<'_, Scanner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The verdict on the request hyper hands over now: `None` when its head is sound.
    pub fn next_request<B>(&self, req: &http::Request<B>) -> Option<Flaw> {
        let pq = req.uri().path_and_query().map(|p| p.as_str());
        self.scanner().next_request(req.method().as_str(), pq)
    }
}

/// Wraps a connection's stream; gives the stream back with [`Seen`] when dropped.
pub struct Observed<T> {
    inner: Option<T>,
    seen: Seen,
    clock: Arc<Clock>,
    heads: Heads,
    back: Option<oneshot::Sender<(T, Seen)>>,
}

impl<T> Observed<T> {
    /// The wrapper, and where the stream comes back when hyper is done with it.
    /// Every read with bytes is told to `clock` and to `heads`.
    pub fn new(inner: T, clock: Arc<Clock>, heads: Heads) -> (Self, oneshot::Receiver<(T, Seen)>) {
        let (tx, rx) = oneshot::channel();
        let o = Observed {
            inner: Some(inner),
            seen: Seen::default(),
            clock,
            heads,
            back: Some(tx),
        };
        (o, rx)
    }

    fn io(&mut self) -> &mut T {
        self.inner.as_mut().expect("present until drop")
    }
}

impl<T> Drop for Observed<T> {
    fn drop(&mut self) {
        if let (Some(io), Some(tx)) = (self.inner.take(), self.back.take()) {
            // If nobody waits, the stream is simply closed.
            let _ = tx.send((io, std::mem::take(&mut self.seen)));
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Observed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(this.io()).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            this.clock.on_read();
            this.heads.scanner().feed(new);
            let s = &mut this.seen;
            if s.first.is_none() {
                s.first = Some((unix_ms(), Instant::now()));
            }
            s.read += new.len() as u64;
            let room = PREFIX.saturating_sub(s.prefix.len()).min(new.len());
            s.prefix.extend_from_slice(&new[..room]);
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Observed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().io()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().io()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(T::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()).poll_flush(cx)
    }

    /// Only flushes: hyper shuts a connection down *before* it returns the error of a
    /// request it rejected, and the client must not see the close before that request's
    /// record is written. Whoever gets the stream back shuts it down (`server::accept`).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()).poll_flush(cx)
    }
}

/// Counts the requests a connection handed to the service.
#[derive(Debug, Default, Clone)]
pub struct Served(Arc<AtomicU64>);

impl Served {
    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The status hyper sent (0: none) and the reason, for a connection error that means
/// a request was rejected before the service saw it; `None` for other endings (I/O
/// errors, an idle keep-alive connection timing out).
pub fn rejection(e: &hyper::Error, seen: &Seen, served: u64) -> Option<(u16, Reason)> {
    if e.is_parse_version_h2() {
        // An HTTP/2 preface: hyper closes without an answer.
        return Some((0, Reason::BadRequest));
    }
    if e.is_parse_too_large() {
        // The head outgrew the read buffer (max_buf_size): hyper answers 431. (Its 414
        // for a long URI cannot happen first: such a URI does not fit the buffer.)
        return Some((431, Reason::TooLarge));
    }
    if e.is_parse() {
        return Some((400, Reason::BadRequest));
    }
    if e.is_incomplete_message() {
        // EOF in the middle of a request head (an idle connection closes cleanly).
        return Some((0, Reason::ClientClosed));
    }
    if e.is_timeout() && served == 0 && seen.read > 0 {
        // (hyper's header timer is off on sandbox listeners: server::deadline keeps it.)
        return Some((0, Reason::RequestTimeout));
    }
    None
}

/// The exchange of a request hyper rejected, ready to be finished with the status hyper
/// sent. Method and path come from the request line when it is the connection's first
/// request and its line is well formed, else `-`; `bytes_in` is what arrived on the
/// connection (0 after earlier requests, where the rejected request's share is not known).
pub fn rejected(ctx: &SandboxCtx, peer: Option<Peer>, seen: &Seen, served: u64) -> Exchange {
    let first = served == 0;
    let (method, path, query) = if first {
        request_line(&seen.prefix)
    } else {
        None
    }
    .unwrap_or((UNKNOWN, UNKNOWN, None));
    let (ts, duration_ms) = match (first, seen.first) {
        (true, Some((ms, at))) => (ms, at.elapsed().as_millis() as u64),
        _ => (unix_ms(), 0),
    };
    let mut rec = AuditRecord::new(
        ts,
        Exchange::request_id(ctx),
        ctx.sandbox.name.to_string(),
        peer,
        method.to_owned(),
        path.to_owned(),
    );
    rec.endpoint = (method != UNKNOWN)
        .then(|| Route::classify(method, path, query).ok())
        .flatten()
        .map(|r| Endpoint::Class(r.class()));
    rec.bytes_in = if first { seen.read } else { 0 };
    rec.duration_ms = duration_ms;
    Exchange::rejected(ctx, rec)
}

/// `METHOD SP TARGET SP HTTP/x.y` from the start of the bytes, strictly: a token method,
/// a visible-ASCII target. Returns method, path and query.
fn request_line(b: &[u8]) -> Option<(&str, &str, Option<&str>)> {
    let end = b.iter().position(|&c| c == b'\n')?;
    let line = std::str::from_utf8(&b[..end]).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    let ok = parts.next().is_none()
        && !method.is_empty()
        && method.len() <= 16
        && method.chars().all(token)
        && !target.is_empty()
        && target.len() <= 256
        && target.bytes().all(|c| (0x21..=0x7e).contains(&c))
        && version.starts_with("HTTP/");
    if !ok {
        return None;
    }
    match target.split_once('?') {
        Some((p, q)) => Some((method, p, Some(q))),
        None => Some((method, target, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::request_line;

    #[test]
    fn request_lines() {
        assert_eq!(
            request_line(b"GET /api/tags HTTP/1.1\r\nHost: x\r\n"),
            Some(("GET", "/api/tags", None))
        );
        assert_eq!(
            request_line(b"POST /api/chat?x=1 HTTP/1.1\n"),
            Some(("POST", "/api/chat", Some("x=1")))
        );
        for bad in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET /api/tags HTTP/1.1",      // no end of line in the prefix
            b"GET  /api/tags HTTP/1.1\r\n", // two spaces
            b"G(T /api/tags HTTP/1.1\r\n",  // not a token
            b"GET /api/\x01tags HTTP/1.1\r\n", // control byte
            b"GET /api/tags SPDY/3\r\n",
            b"\xff\xfe /x HTTP/1.1\r\n",
        ] {
            assert_eq!(
                request_line(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod hyper_agrees;
