//! The framing scanner against hyper itself: random pipelined streams of sound requests
//! (lengths, chunked bodies with extensions, spaces and trailers, empty lines before a
//! head, LF line ends, names in any case), written in pieces of any size, are served by
//! hyper over [`Observed`]. Every request hyper hands over must find its own verdict, a
//! sound one, and hyper must read the bodies that were sent — so the scanner and hyper
//! agree on where each request begins.

use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Clock, Heads, Observed};
use protocol::framing::Flaw;

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
        of[self.below(of.len())]
    }
}

/// One sound request: its bytes and the body hyper must read.
fn request(rng: &mut Rng, i: usize) -> (Vec<u8>, Vec<u8>) {
    let mut body = Vec::new();
    for _ in 0..rng.below(4) {
        body.extend_from_slice(format!("{{\"i\":{i}}}\r\n0\r\n\r\n").as_bytes());
    }
    let eol = rng.pick(&["\r\n", "\n"]);
    let mut head = rng.pick(&["", "\r\n", "\n", "\r\n\n"]).to_owned();
    let kind = rng.below(3);
    let method = if kind == 0 { "GET" } else { "POST" };
    head += &format!("{method} /r/{i} HTTP/1.1{eol}Host: x{eol}X-Pad:  a b{eol}");
    let mut out = Vec::new();
    match kind {
        0 => body.clear(),
        1 => {
            let name = rng.pick(&["Content-Length", "content-length", "CONTENT-LENGTH"]);
            head += &format!("{name}: {}{eol}{eol}", body.len());
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(&body);
            return (out, body);
        }
        _ => {
            let name = rng.pick(&["Transfer-Encoding", "transfer-encoding"]);
            let coding = rng.pick(&["chunked", "Chunked", "gzip, chunked"]);
            head += &format!("{name}: {coding}{eol}{eol}");
            out.extend_from_slice(head.as_bytes());
            let mut rest = &body[..];
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len());
                let size = if rng.below(2) == 0 {
                    format!("{n:x}")
                } else {
                    format!("{n:X}")
                };
                let pad = rng.pick(&["", " ", "\t "]);
                let ext = rng.pick(&["", ";a=1", ";b=\"x y\""]);
                out.extend_from_slice(format!("{size}{pad}{ext}\r\n").as_bytes());
                out.extend_from_slice(&rest[..n]);
                out.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            out.extend_from_slice(rng.pick(&["0\r\n", "000\r\n", "0;z\r\n"]).as_bytes());
            out.extend_from_slice(
                rng.pick(&["", "X-Trailer: 1\r\n", "A: b\r\nC: d\r\n"])
                    .as_bytes(),
            );
            out.extend_from_slice(b"\r\n");
            return (out, body);
        }
    }
    head += eol;
    out.extend_from_slice(head.as_bytes());
    (out, body)
}

/// Serves `stream` with hyper over the wrapper, written in random pieces; returns each
/// request's verdict and the body hyper read.
async fn serve(rng: &mut Rng, stream: Vec<u8>, n: usize) -> Vec<(Option<Flaw>, Vec<u8>)> {
    let (mut client, server) = tokio::io::duplex(1 + rng.below(300));
    let heads = Heads::new(64 << 10);
    let (io, _back) = Observed::new(server, Clock::new(), heads.clone());
    let got = std::sync::Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let flaw = heads.next_request(&req);
        let seen = seen.clone();
        async move {
            let body = req.into_body().collect().await?.to_bytes().to_vec();
            seen.lock().unwrap().push((flaw, body));
            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    });
    let conn = tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(io), svc));
    let mut pieces = Vec::new();
    let mut rest = &stream[..];
    while !rest.is_empty() {
        let k = 1 + rng.below(rest.len().min(200));
        pieces.push(rest[..k].to_vec());
        rest = &rest[k..];
    }
    let (mut rd, mut wr) = tokio::io::split(&mut client);
    let write = async {
        for p in pieces {
            wr.write_all(&p).await.unwrap();
        }
    };
    let read = async {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while all.windows(6).filter(|w| w == b"\r\n\r\nok").count() < n {
            let k = rd.read(&mut buf).await.unwrap();
            assert!(
                k > 0,
                "hyper closed early: {:?}",
                String::from_utf8_lossy(&all)
            );
            all.extend_from_slice(&buf[..k]);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        tokio::join!(write, read)
    })
    .await
    .expect("every request answered");
    conn.abort();
    let out = std::mem::take(&mut *got.lock().unwrap());
    out
}

#[tokio::test]
async fn the_scanner_finds_every_request_hyper_serves() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let n = 1 + rng.below(6);
        let mut stream = Vec::new();
        let mut bodies = Vec::new();
        for i in 0..n {
            let (bytes, body) = request(&mut rng, i);
            stream.extend(bytes);
            bodies.push(body);
        }
        let got = serve(&mut rng, stream.clone(), n).await;
        let verdicts: Vec<_> = got.iter().map(|g| g.0).collect();
        let read: Vec<_> = got.into_iter().map(|g| g.1).collect();
        let shown = String::from_utf8_lossy(&stream);
        assert_eq!(verdicts, vec![None; n], "round {round}: {shown:?}");
        assert_eq!(read, bodies, "round {round}: {shown:?}");
    }
}

/// hyper shuts a connection down before it reports the request it rejected: the wrapper
/// keeps the connection open until whoever gets the stream back (after the record) closes.
#[tokio::test]
async fn the_close_waits_for_the_stream_to_come_back() {
    use std::task::{Context, Poll, Waker};
    use tokio::io::{AsyncRead, ReadBuf};

    let (mut client, server) = tokio::io::duplex(64);
    let (mut io, back) = Observed::new(server, Clock::new(), Heads::new(1024));
    io.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        .await
        .unwrap();
    io.shutdown().await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        let mut rb = ReadBuf::new(&mut buf);
        match std::pin::Pin::new(&mut client).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => panic!("closed before the record"),
            Poll::Ready(Ok(())) => got.extend_from_slice(rb.filled()),
            Poll::Ready(Err(e)) => panic!("{e}"),
            Poll::Pending => break,
        }
    }
    assert!(got.starts_with(b"HTTP/1.1 400"), "the answer is out");
    drop(io);
    let (mut stream, _) = back.await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(client.read(&mut buf).await.unwrap(), 0, "closed now");
}
