//! Small HTTP/1.1 clients for tests: hyper over TCP or a unix socket (streamed frame by
//! frame), and a raw-bytes exchange with a strict little response parser for the
//! hostile-request corpus.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// The response header naming the request's audit record.
pub const REQUEST_ID: &str = "x-ollama-bridge-request-id";

/// Guard against a test hanging forever: generous, never an assertion about speed.
pub const GUARD: Duration = Duration::from_secs(60);

/// A whole `GET /api/version` request, for the raw-bytes helpers.
pub const GET_VERSION: &[u8] = b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n";

async fn send_on<S>(io: S, req: Request<Full<Bytes>>) -> hyper::Result<Response<Incoming>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await
}

/// Sends one request on a new TCP connection.
pub async fn send_tcp(
    addr: std::net::SocketAddr,
    req: Request<Full<Bytes>>,
) -> hyper::Result<Response<Incoming>> {
    let s = TcpStream::connect(addr).await.expect("connect tcp");
    send_on(s, req).await
}

/// Sends one request on a new unix-socket connection.
pub async fn send_unix(
    path: &Path,
    req: Request<Full<Bytes>>,
) -> hyper::Result<Response<Incoming>> {
    let s = UnixStream::connect(path).await.expect("connect unix");
    send_on(s, req).await
}

/// Builds a request; `Host` defaults to `localhost`.
pub fn req(method: &str, path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    let body: Bytes = body.into();
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if !body.is_empty() {
        b = b.header("content-type", "application/json");
    }
    b.body(Full::new(body)).expect("valid request")
}

/// A JSON POST.
pub fn post(path: &str, v: &serde_json::Value) -> Request<Full<Bytes>> {
    req("POST", path, serde_json::to_vec(v).expect("json"))
}

/// Reads a whole response.
pub async fn collect(resp: Response<Incoming>) -> (u16, http::HeaderMap, Bytes) {
    let (parts, body) = resp.into_parts();
    let bytes = tokio::time::timeout(GUARD, body.collect())
        .await
        .expect("body within the guard time")
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    (parts.status.as_u16(), parts.headers, bytes)
}

/// Reads the next data frame of a streamed body (None at the end).
pub async fn next_data(body: &mut Incoming) -> Option<Bytes> {
    loop {
        let f = tokio::time::timeout(GUARD, body.frame())
            .await
            .expect("frame within the guard time")?;
        match f {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    return Some(d);
                }
            }
            Err(_) => return None,
        }
    }
}

/// The rest of a streamed body, to its end.
pub async fn rest(body: &mut Incoming) -> Vec<u8> {
    let mut all = Vec::new();
    while let Some(d) = next_data(body).await {
        all.extend_from_slice(&d);
    }
    all
}

/// The lines of an NDJSON body (empty lines skipped), each parsed.
pub fn ndjson(body: &[u8]) -> Vec<serde_json::Value> {
    body.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l).unwrap_or_else(|e| {
                panic!("not a JSON line ({e}): {:?}", String::from_utf8_lossy(l))
            })
        })
        .collect()
}

/// A parsed raw response.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET /_bridge/status` of the listener at `sock`, which must answer 200 with JSON.
/// Status calls have their own rate limit (10 at once, then one a second): a 429 is
/// waited out as its `Retry-After` says.
pub async fn bridge_status(sock: &Path) -> serde_json::Value {
    loop {
        let (s, h, b) = collect(
            send_unix(sock, req("GET", protocol::route::STATUS_PATH, ""))
                .await
                .unwrap(),
        )
        .await;
        if s == 429 {
            let secs = h
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(secs)).await;
            continue;
        }
        assert_eq!(s, 200);
        return serde_json::from_slice(&b).unwrap();
    }
}

/// Waits until `/_bridge/status` of the listener at `sock` shows `want` for `key`
/// (asking a few times a second: status calls are rate-limited).
pub async fn wait_status(sock: &Path, key: &str, want: u64) {
    tokio::time::timeout(GUARD, async {
        while bridge_status(sock).await[key] != want {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("/_bridge/status shows {key} = {want} within the guard time"));
}

/// Reads one response from `s` within the guard time; panics when the peer closes first.
pub async fn response_on<S: AsyncRead + Unpin>(s: &mut S) -> RawResponse {
    tokio::time::timeout(GUARD, read_response(s, false))
        .await
        .expect("an answer within the guard time")
        .expect("read the answer")
        .expect("an answer before the close")
}

/// Reads from `s` until the peer closes it (or resets it); returns what arrived.
pub async fn read_until_close(s: &mut UnixStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(GUARD, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the peer closes the connection within the guard time");
    all
}

/// Writes `head` on a new unix connection, then `chunk` again and again until `total`
/// body bytes are written or the peer stops reading, while reading the answer. Returns
/// the answer and the body bytes written. The write side stays open until the answer is
/// in (a half-close would look like a client gone).
pub async fn raw_unix_writing(
    path: &Path,
    head: Vec<u8>,
    chunk: Vec<u8>,
    total: u64,
) -> (RawResponse, u64) {
    let (mut rd, mut wr) = UnixStream::connect(path)
        .await
        .expect("connect unix")
        .into_split();
    let writer = tokio::spawn(async move {
        let mut sent = 0u64;
        if wr.write_all(&head).await.is_ok() {
            while sent < total && wr.write_all(&chunk).await.is_ok() {
                sent += chunk.len() as u64;
            }
        }
        (wr, sent)
    });
    let resp = response_on(&mut rd).await;
    // The peer stops reading once it has answered: the writer ends there.
    let (wr, sent) = tokio::time::timeout(GUARD, writer)
        .await
        .expect("the writer stops")
        .expect("the writer task");
    drop(wr);
    (resp, sent)
}

/// Writes raw bytes on a new unix connection and reads one response (or the close).
pub async fn raw_unix(path: &Path, bytes: &[u8]) -> std::io::Result<Option<RawResponse>> {
    let mut s = UnixStream::connect(path).await?;
    s.write_all(bytes).await?;
    let head_only = bytes.starts_with(b"HEAD ");
    tokio::time::timeout(GUARD, read_response(&mut s, head_only))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response"))?
}

/// Writes raw bytes on a new unix connection (then, with `close_write`, shuts down its
/// write side) and reads until the server closes: the response, if any, and the bytes.
/// Returns once the server closed the connection (never on a timer).
pub async fn raw_unix_until_close(
    path: &Path,
    bytes: &[u8],
    close_write: bool,
) -> std::io::Result<(Option<RawResponse>, Vec<u8>)> {
    let mut s = UnixStream::connect(path).await?;
    // The server may stop reading and answer early (e.g. 431): a failed write is no error.
    let _ = s.write_all(bytes).await;
    if close_write {
        let _ = s.shutdown().await;
    }
    let mut all = Vec::new();
    tokio::time::timeout(GUARD, async {
        let mut tmp = [0u8; 8192];
        loop {
            match s.read(&mut tmp).await {
                Ok(0) => return Ok(()),
                Ok(n) => all.extend_from_slice(&tmp[..n]),
                // A reset after the answer still ends the exchange.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no close"))??;
    let resp = read_response(&mut &all[..], false).await?;
    Ok((resp, all))
}

/// Reads one HTTP/1.1 response: None if the peer closed without one. `head_only` for
/// answers to HEAD, which have no body whatever their headers say.
pub async fn read_response<S: AsyncRead + Unpin>(
    s: &mut S,
    head_only: bool,
) -> std::io::Result<Option<RawResponse>> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut rest = buf[head_end..].to_vec();
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let body = if head_only {
        Vec::new()
    } else if let Some(cl) = get("content-length") {
        let n: usize = cl.parse().unwrap_or(0);
        while rest.len() < n {
            let k = s.read(&mut tmp).await?;
            if k == 0 {
                break;
            }
            rest.extend_from_slice(&tmp[..k]);
        }
        rest.truncate(n);
        rest
    } else if get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        let mut out = Vec::new();
        loop {
            while !rest.windows(2).any(|w| w == b"\r\n") {
                let k = s.read(&mut tmp).await?;
                if k == 0 {
                    return Ok(Some(RawResponse {
                        status,
                        headers,
                        body: out,
                    }));
                }
                rest.extend_from_slice(&tmp[..k]);
            }
            let p = rest.windows(2).position(|w| w == b"\r\n").expect("found");
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&rest[..p]).trim(), 16).unwrap_or(0);
            rest.drain(..p + 2);
            while rest.len() < size + 2 {
                let k = s.read(&mut tmp).await?;
                if k == 0 {
                    break;
                }
                rest.extend_from_slice(&tmp[..k]);
            }
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size.min(rest.len())]);
            rest.drain(..(size + 2).min(rest.len()));
        }
        out
    } else {
        Vec::new()
    };
    Ok(Some(RawResponse {
        status,
        headers,
        body,
    }))
}

/// Parses a server-sent-events body into its `data:` payloads: JSON values, with
/// `data: [DONE]` as the string `"[DONE]"`. Panics on anything that is not an event.
pub fn sse_events(body: &[u8]) -> Vec<serde_json::Value> {
    let text = std::str::from_utf8(body).expect("SSE body is UTF-8");
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let data = e
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {e:?}"));
            if data == "[DONE]" {
                serde_json::Value::String(data.to_owned())
            } else {
                serde_json::from_str(data).unwrap_or_else(|err| panic!("{data:?}: {err}"))
            }
        })
        .collect()
}
