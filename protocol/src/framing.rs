//! What each request head on an HTTP/1.1 connection says about its own framing, read
//! from the connection's raw bytes.
//!
//! hyper resolves a head before the service sees it: of two equal `Content-Length`
//! fields it keeps one, and with `Transfer-Encoding` it drops `Content-Length`
//! altogether. Those are what request-smuggling attempts send, and the bridge refuses
//! them, so it has to see them as they came. A [`Scanner`] is fed every byte the server
//! reads and follows the connection request by request exactly as hyper does (heads as
//! httparse ends them, bodies by `Content-Length` or by hyper's chunked decoder), so
//! the n-th head it finds is the n-th request hyper hands to the service;
//! [`Scanner::next_request`] gives that request's verdict, after checking that the head
//! it found has the method and target hyper parsed (so a scanner that lost step with
//! hyper is noticed, never trusted). Where hyper would refuse the bytes itself (a bad
//! head, bad chunk framing) the scanner stops following; hyper closes the connection
//! there, and any request after that point would be [`Flaw::Unverified`].

use std::collections::VecDeque;

/// What makes a request head's framing unacceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// `Content-Length` and `Transfer-Encoding` in the same head.
    LengthAndTransferEncoding,
    /// More than one `Content-Length` field, even with equal values.
    RepeatedContentLength,
    /// A `Content-Length` whose value is a list (`5, 5`).
    ContentLengthList,
    /// A header line folded onto the previous one (obs-fold).
    ObsFold,
    /// The connection's bytes could not be followed up to this request, so its head was
    /// not seen as sent (a safeguard: it does not happen while hyper keeps serving).
    Unverified,
}

impl Flaw {
    /// The refusal's message.
    pub fn message(self) -> &'static str {
        match self {
            Flaw::LengthAndTransferEncoding => {
                "both Content-Length and Transfer-Encoding are set; send one of them"
            }
            Flaw::RepeatedContentLength => "repeated Content-Length header; send it once",
            Flaw::ContentLengthList => "Content-Length is a list; send a single length",
            Flaw::ObsFold => "folded header line (obs-fold) is not accepted",
            Flaw::Unverified => {
                "the request's framing could not be checked (earlier bytes on this connection were not understood); open a new connection"
            }
        }
    }
}

/// Where the scanner is in the connection's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside a request head (or before one).
    Head,
    /// Inside a body of known length: this many bytes left.
    Length(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// The bytes are not what hyper serves; nothing after this point is judged.
    Lost,
}

/// The states of hyper's chunked decoder (`proto/h1/decode.rs`), with the same rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// The first hex digit of a chunk size.
    Start,
    /// More hex digits (the size so far).
    Size(u64),
    /// Spaces after the size.
    Lws(u64),
    /// A chunk extension, up to CR.
    Ext(u64),
    /// The LF ending the size line.
    SizeLf(u64),
    /// Chunk data: this many bytes left.
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: CR of the final empty line, or the start of a trailer.
    EndCr,
    EndLf,
    Trailer,
    TrailerLf,
}

/// Follows one connection's request bytes; see the module documentation.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// The head being collected (leading empty lines included until it ends).
    head: Vec<u8>,
    /// How far `head` was searched for its end.
    searched: usize,
    /// Longest head followed; a longer one is refused by hyper (431).
    max_head: usize,
    /// The heads seen and not yet taken, in order: verdict and request line.
    heads: VecDeque<(Option<Flaw>, Vec<u8>)>,
}

impl Scanner {
    /// A scanner for a connection whose heads hyper limits to `max_head` bytes.
    pub fn new(max_head: usize) -> Scanner {
        Scanner {
            state: State::Head,
            head: Vec::new(),
            searched: 0,
            max_head,
            heads: VecDeque::new(),
        }
    }

    /// The verdict on the next request hyper hands over, whose method and (for the
    /// origin form) path and query hyper parsed as given: `None` when its head is
    /// sound; [`Flaw::Unverified`] when no head was seen for it or the head seen is
    /// another request's.
    pub fn next_request(&mut self, method: &str, path_and_query: Option<&str>) -> Option<Flaw> {
        let Some((flaw, line)) = self.heads.pop_front() else {
            return Some(Flaw::Unverified);
        };
        let mut parts = line.split(|&b| b == b' ');
        let (m, target) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        // (A fragment is not part of the target hyper keeps.)
        let target = target.split(|&b| b == b'#').next().unwrap_or_default();
        let same_target = match (target.first(), path_and_query) {
            (Some(b'/'), Some(pq)) => target == pq.as_bytes(),
            _ => true, // absolute and other forms: the method must do
        };
        if m != method.as_bytes() || !same_target {
            self.state = State::Lost;
            self.heads.clear();
            return Some(Flaw::Unverified);
        }
        flaw
    }

    /// Whether the scanner stopped following the connection.
    pub fn lost(&self) -> bool {
        self.state == State::Lost
    }

    /// Takes the next bytes read from the connection.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Lost => return,
                State::Length(n) => {
                    let k = n.min(data.len() as u64);
                    data = &data[k as usize..];
                    self.state = match n - k {
                        0 => State::Head,
                        left => State::Length(left),
                    };
                }
                State::Chunked(Chunk::Data(n)) => {
                    let k = n.min(data.len() as u64);
                    data = &data[k as usize..];
                    self.state = State::Chunked(match n - k {
                        0 => Chunk::DataCr,
                        left => Chunk::Data(left),
                    });
                }
                State::Chunked(c) => {
                    self.state = match chunk_step(c, data[0]) {
                        Some(Some(next)) => State::Chunked(next),
                        Some(None) => State::Head,
                        None => State::Lost,
                    };
                    data = &data[1..];
                }
                State::Head => data = self.head_bytes(data),
            }
        }
    }

    /// Adds bytes to the head; returns those after its end.
    fn head_bytes<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let before = self.head.len();
        self.head.extend_from_slice(data);
        // Empty lines before a request line are skipped (httparse does so).
        let mut start = 0;
        loop {
            match self.head[start..] {
                [b'\n', ..] => start += 1,
                [b'\r', b'\n', ..] => start += 2,
                [b'\r'] | [] => {
                    self.head.drain(..start);
                    self.searched = 0;
                    return &[];
                }
                [b'\r', ..] => return self.lose(),
                _ => break,
            }
        }
        if start > 0 {
            self.head.drain(..start);
            self.searched = 0;
        }
        // The head ends with its first empty line (CRLF or LF line ends).
        let buf = &self.head;
        let mut i = self.searched;
        let end = loop {
            let Some(p) = buf[i..].iter().position(|&b| b == b'\n') else {
                i = buf.len();
                break None;
            };
            let nl = i + p;
            match buf[nl + 1..] {
                [b'\n', ..] => break Some(nl + 2),
                [b'\r', b'\n', ..] => break Some(nl + 3),
                [] | [b'\r'] => {
                    i = nl;
                    break None;
                }
                _ => i = nl + 1,
            }
        };
        // A head longer than hyper takes, however its bytes arrive.
        let Some(end) = end else {
            self.searched = i;
            if self.head.len() >= self.max_head {
                return self.lose(); // its end is further still
            }
            return &[];
        };
        if end > self.max_head {
            return self.lose();
        }
        // `data` began at `before` before the `start` bytes were dropped: the bytes of
        // `data` after the head's end go back to the caller.
        let used = (end + start).saturating_sub(before).min(data.len());
        let rest = &data[used..];
        self.head.truncate(end);
        let (flaw, next) = judge(&self.head);
        let line = self.head.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
        self.heads.push_back((flaw, line));
        self.state = next;
        self.head.clear();
        if self.head.capacity() > 16 << 10 {
            self.head.shrink_to(16 << 10);
        }
        self.searched = 0;
        rest
    }

    fn lose<'a>(&mut self) -> &'a [u8] {
        self.state = State::Lost;
        self.head = Vec::new();
        &[]
    }
}

/// One byte through the chunked decoder: the next state, `Some(None)` at the body's
/// end, `None` where hyper fails.
fn chunk_step(c: Chunk, b: u8) -> Option<Option<Chunk>> {
    let hex = |size: u64| {
        let d = (b as char).to_digit(16)?;
        size.checked_mul(16)?.checked_add(u64::from(d))
    };
    let next = match (c, b) {
        (Chunk::Start, _) => Chunk::Size(hex(0)?),
        (Chunk::Size(n), b'\t' | b' ') | (Chunk::Lws(n), b'\t' | b' ') => Chunk::Lws(n),
        (Chunk::Size(n) | Chunk::Lws(n), b';') => Chunk::Ext(n),
        (Chunk::Size(n) | Chunk::Lws(n) | Chunk::Ext(n), b'\r') => Chunk::SizeLf(n),
        (Chunk::Size(n), _) => Chunk::Size(hex(n)?),
        (Chunk::Lws(_), _) | (Chunk::Ext(_), b'\n') => return None,
        (Chunk::Ext(n), _) => Chunk::Ext(n),
        (Chunk::SizeLf(0), b'\n') => Chunk::EndCr,
        (Chunk::SizeLf(n), b'\n') => Chunk::Data(n),
        (Chunk::DataCr, b'\r') => Chunk::DataLf,
        (Chunk::DataLf, b'\n') => Chunk::Start,
        (Chunk::EndCr, b'\r') => Chunk::EndLf,
        (Chunk::EndCr, _) | (Chunk::Trailer, _) if b != b'\r' => Chunk::Trailer,
        (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
        (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
        (Chunk::EndLf, b'\n') => return Some(None),
        _ => return None,
    };
    Some(Some(next))
}

/// Digits only, as hyper reads a length (no sign, no spaces, no list).
fn length(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// A whole head (request line to its empty line): its flaw, and where the stream goes
/// next, as hyper frames its body.
fn judge(head: &[u8]) -> (Option<Flaw>, State) {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let http10 = request_line.ends_with(b" HTTP/1.0");
    let (mut lengths, mut cl_list, mut te, mut chunked, mut folded) =
        (Vec::new(), false, false, false, false);
    for line in lines.filter(|l| !l.is_empty()) {
        if matches!(line.first(), Some(b' ' | b'\t')) {
            folded = true;
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return (None, State::Lost); // hyper refuses the head itself
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            cl_list |= value.contains(&b',');
            lengths.push(length(value));
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te = true;
            // hyper: the last field's last coding decides.
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = trim(last).eq_ignore_ascii_case(b"chunked");
        }
    }
    let flaw = if folded {
        Some(Flaw::ObsFold)
    } else if te && !lengths.is_empty() {
        Some(Flaw::LengthAndTransferEncoding)
    } else if lengths.len() > 1 {
        Some(Flaw::RepeatedContentLength)
    } else if cl_list {
        Some(Flaw::ContentLengthList)
    } else {
        None
    };
    let next = if folded {
        State::Lost // httparse refuses a folded line in a request
    } else if te {
        if http10 || !chunked {
            State::Lost // hyper refuses these with 400 and closes
        } else {
            State::Chunked(Chunk::Start)
        }
    } else {
        match lengths.first() {
            None => State::Head,
            Some(&first) if lengths.iter().all(|&l| l == first) => match first {
                Some(0) => State::Head,
                Some(n) => State::Length(n),
                None => State::Lost,
            },
            Some(_) => State::Lost,
        }
    };
    (flaw, next)
}

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;
