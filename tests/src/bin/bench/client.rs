//! A minimal HTTP/1.1 client over a TcpStream, so the client adds as little as possible
//! and keep-alive is under control: pre-built request bytes, a response parser for
//! Content-Length and chunked bodies, and a streaming reader that times every NDJSON
//! line against the stamp the double put in it.

use std::io;
use std::net::SocketAddr;

use bridge_tests::double::stamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request as bytes on the wire.
pub fn request(path: &str, body: &[u8], close: bool) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A small chat request answered at once, not streamed.
pub fn small_chat() -> Vec<u8> {
    br#"{"model":"qwen2.5:7b","messages":[{"role":"user","content":"Say hello."}],"stream":false}"#
        .to_vec()
}

/// A streamed chat request.
pub fn stream_chat() -> Vec<u8> {
    br#"{"model":"qwen2.5:7b","messages":[{"role":"user","content":"Count."}]}"#.to_vec()
}

/// [`stream_chat`] offering a tool: the bridge runs the reply through tool-call salvage.
pub fn stream_chat_tools() -> Vec<u8> {
    br#"{"model":"qwen2.5:7b","messages":[{"role":"user","content":"Count."}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]}"#.to_vec()
}

/// One client connection.
pub struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    pos: usize,
    /// When the last read returned (stamp clock).
    read_at: u64,
}

/// What a response held.
pub struct Resp {
    pub status: u16,
    pub body_len: usize,
}

fn bad(m: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m.to_owned())
}

fn find(h: &[u8], pat: &[u8]) -> Option<usize> {
    h.windows(pat.len()).position(|w| w == pat)
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Conn {
            s,
            buf: Vec::with_capacity(64 << 10),
            pos: 0,
            read_at: 0,
        })
    }

    /// Reads more bytes into the buffer; EOF is an error (a response is unfinished).
    async fn fill(&mut self) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 32 << 10 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + (64 << 10), 0);
        let n = self.s.read(&mut self.buf[len..]).await;
        self.read_at = stamp::now_ns();
        self.buf.truncate(len + *n.as_ref().unwrap_or(&0));
        match n? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            n => Ok(n),
        }
    }

    /// Reads a response head: status and the body framing.
    async fn head(&mut self) -> io::Result<(u16, Framing)> {
        let end = loop {
            if let Some(e) = find(&self.buf[self.pos..], b"\r\n\r\n") {
                break self.pos + e + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[self.pos..end]).map_err(|_| bad("head"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("status line"))?;
        let mut framing = Framing::Close;
        for l in head.lines().skip(1) {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("content-length") {
                framing = Framing::Length(v.parse().map_err(|_| bad("content-length"))?);
            } else if k.eq_ignore_ascii_case("transfer-encoding")
                && v.eq_ignore_ascii_case("chunked")
            {
                framing = Framing::Chunked;
            }
        }
        self.pos = end;
        Ok((status, framing))
    }

    /// Sends a request and reads the whole response.
    pub async fn exchange(&mut self, req: &[u8]) -> io::Result<Resp> {
        self.s.write_all(req).await?;
        let (status, framing) = self.head().await?;
        let body_len = match framing {
            Framing::Length(n) => {
                while self.buf.len() - self.pos < n {
                    self.fill().await?;
                }
                self.pos += n;
                n
            }
            Framing::Chunked => {
                let mut d = Dechunk::default();
                loop {
                    let used = d.feed(&self.buf[self.pos..], |_| {});
                    self.pos += used;
                    if d.done {
                        break d.total;
                    }
                    self.fill().await?;
                }
            }
            Framing::Close => return Err(bad("no body framing")),
        };
        Ok(Resp { status, body_len })
    }

    /// Sends a streamed request and reads its NDJSON lines as they arrive.
    pub async fn stream(&mut self, req: &[u8], out: &mut StreamStats) -> io::Result<()> {
        self.s.write_all(req).await?;
        let (status, framing) = self.head().await?;
        if status != 200 || framing != Framing::Chunked {
            return Err(bad("stream answered without a 200 chunked response"));
        }
        let mut d = Dechunk::default();
        let mut line: Vec<u8> = Vec::with_capacity(256);
        loop {
            let now = self.read_at;
            let mut lines_this_read = 0u32;
            let (mut first, mut last) = (u64::MAX, 0u64);
            let used = d.feed(&self.buf[self.pos..], |data| {
                for part in data.split_inclusive(|&b| b == b'\n') {
                    line.extend_from_slice(part);
                    if line.ends_with(b"\n") {
                        lines_this_read += 1;
                        if let Some(sent) = stamp::parse(&line) {
                            out.latency_ns.push(now.saturating_sub(sent));
                            first = first.min(sent);
                            last = last.max(sent);
                        }
                        out.lines += 1;
                        line.clear();
                    }
                }
            });
            self.pos += used;
            if lines_this_read > 1 {
                out.coalesced_reads += 1;
                if last.saturating_sub(first) >= HELD_NS {
                    out.held_reads += 1;
                }
            }
            if lines_this_read > 0 {
                out.reads_with_lines += 1;
            }
            if d.done {
                return Ok(());
            }
            self.fill().await?;
        }
    }
}

/// Send-time spread above which chunks delivered together mean one was held back.
pub const HELD_NS: u64 = 500_000;

/// Per-stream measurements.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub latency_ns: Vec<u64>,
    pub lines: u64,
    /// Reads that completed more than one line.
    pub coalesced_reads: u64,
    /// Of those, reads whose chunks were sent at least `HELD_NS` apart: a chunk was held
    /// back until a later one came (chunks the double sent back to back may arrive
    /// together on any path).
    pub held_reads: u64,
    /// Reads that completed at least one line.
    pub reads_with_lines: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

/// An incremental chunked-body decoder.
#[derive(Default)]
struct Dechunk {
    /// Data bytes left in the current chunk (plus its CRLF when `in_data`).
    left: usize,
    in_data: bool,
    done: bool,
    total: usize,
}

impl Dechunk {
    /// Consumes what it can of `b`, handing data to `data`; returns the bytes used.
    fn feed(&mut self, b: &[u8], mut data: impl FnMut(&[u8])) -> usize {
        let mut i = 0;
        while !self.done && i < b.len() {
            if self.in_data {
                if self.left > 0 {
                    let n = self.left.min(b.len() - i);
                    data(&b[i..i + n]);
                    self.total += n;
                    self.left -= n;
                    i += n;
                    continue;
                }
                if b.len() - i < 2 {
                    break;
                }
                i += 2; // CRLF after the data
                self.in_data = false;
                continue;
            }
            let Some(e) = find(&b[i..], b"\r\n") else {
                break;
            };
            let size_line = std::str::from_utf8(&b[i..i + e]).unwrap_or("");
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or(0);
            if size == 0 {
                // Last chunk: no trailers are sent by these servers, one CRLF ends it.
                if b.len() - i < e + 4 {
                    break;
                }
                i += e + 4;
                self.done = true;
                break;
            }
            i += e + 2;
            self.left = size;
            self.in_data = true;
        }
        i
    }
}
