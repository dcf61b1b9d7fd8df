//! Unit tests of the framing scanner: sound streams, each flaw on any request of a
//! connection, what hyper refuses, desynchronisation, any split of the bytes.

use super::*;

/// The verdicts of every head in `bytes`, fed whole and byte by byte (which must
/// agree), and whether the scanner lost the stream.
fn scan(bytes: &[u8]) -> (Vec<Option<Flaw>>, bool) {
    let mut whole = Scanner::new(1024);
    whole.feed(bytes);
    let mut bytewise = Scanner::new(1024);
    for b in bytes {
        bytewise.feed(std::slice::from_ref(b));
    }
    assert_eq!(
        whole.heads,
        bytewise.heads,
        "{:?}",
        String::from_utf8_lossy(bytes)
    );
    assert_eq!(whole.state, bytewise.state);
    // Every split in two agrees as well.
    for cut in 0..bytes.len() {
        let mut two = Scanner::new(1024);
        two.feed(&bytes[..cut]);
        two.feed(&bytes[cut..]);
        assert_eq!(two.heads, whole.heads, "cut at {cut}");
    }
    let lost = whole.lost();
    (whole.heads.into_iter().map(|h| h.0).collect(), lost)
}

const BODY: &str = r#"{"model":"qwen2.5:7b","messages":[]}"#;

fn post(headers: &str, body: &str) -> String {
    format!("POST /api/chat HTTP/1.1\r\nHost: x\r\n{headers}\r\n{body}")
}

#[test]
fn sound_requests_one_after_another() {
    let chunked = format!("{:x}\r\n{BODY}\r\n0\r\n\r\n", BODY.len());
    let stream = [
        "GET /api/tags HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        post(&format!("Content-Length: {}\r\n", BODY.len()), BODY),
        post("Transfer-Encoding: chunked\r\n", &chunked),
        // Extensions, spaces after the size, a trailer.
        post(
            "transfer-encoding: Chunked\r\n",
            "2 ;ext=1\r\n{}\r\n0\r\nX-Trailer: 1\r\n\r\n",
        ),
        // Empty lines before a request line; LF line ends.
        "\r\n\nGET / HTTP/1.1\nHost: x\n\n".to_owned(),
        "HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".to_owned(),
    ]
    .concat();
    let (heads, lost) = scan(stream.as_bytes());
    assert_eq!(heads, vec![None; 6]);
    assert!(!lost);
}

#[test]
fn ambiguous_framing_is_seen_in_any_request_of_a_connection() {
    let first = post(&format!("Content-Length: {}\r\n", BODY.len()), BODY);
    let cases: &[(&str, Flaw)] = &[
        (
            "Content-Length: 2\r\nContent-Length: 2\r\n",
            Flaw::RepeatedContentLength,
        ),
        (
            "content-length: 2\r\nCONTENT-LENGTH:2 \r\n",
            Flaw::RepeatedContentLength,
        ),
        ("Content-Length: 2, 2\r\n", Flaw::ContentLengthList),
        (
            "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
            Flaw::LengthAndTransferEncoding,
        ),
        (
            "transfer-encoding: CHUNKED\r\ncontent-length: 2\r\n",
            Flaw::LengthAndTransferEncoding,
        ),
        ("X-A: 1\r\n  folded\r\nContent-Length: 2\r\n", Flaw::ObsFold),
    ];
    for (headers, flaw) in cases {
        let stream = format!("{first}{}", post(headers, "{}"));
        let (heads, _) = scan(stream.as_bytes());
        assert_eq!(heads, [None, Some(*flaw)], "{headers:?}");
    }
}

#[test]
fn what_hyper_refuses_stops_the_scan() {
    for bad in [
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nxx",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        "POST / HTTP/1.1\r\nContent-Length: +2\r\n\r\n{}",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\n{}\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;a\nb\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}xx",
        "\rGET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nno colon\r\n\r\n",
    ] {
        let stream = format!("{bad}GET / HTTP/1.1\r\n\r\n");
        let (heads, lost) = scan(stream.as_bytes());
        assert!(lost, "{bad:?}");
        assert!(heads.len() <= 1, "{bad:?}: {heads:?}");
    }
}

#[test]
fn a_request_not_followed_is_unverified() {
    let mut s = Scanner::new(64);
    s.feed(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(s.next_request("GET", Some("/")), None);
    assert_eq!(s.next_request("GET", Some("/")), Some(Flaw::Unverified));
    // A head longer than hyper allows.
    s.feed(&[b'x'; 100]);
    assert!(s.lost());
    assert_eq!(s.next_request("GET", Some("/")), Some(Flaw::Unverified));
}

#[test]
fn a_head_that_is_not_hypers_request_is_unverified() {
    let two = b"GET /a?x=1 HTTP/1.1\r\n\r\nPOST /b#f HTTP/1.1\r\n\r\nGET http://h HTTP/1.1\r\n\r\n";
    let mut s = Scanner::new(1024);
    s.feed(two);
    assert_eq!(s.next_request("GET", Some("/a?x=1")), None);
    assert_eq!(s.next_request("POST", Some("/b")), None);
    assert_eq!(s.next_request("GET", Some("/")), None, "absolute form");
    for (method, target) in [("POST", "/a?x=1"), ("GET", "/a"), ("GET", "/a?x=2")] {
        let mut s = Scanner::new(1024);
        s.feed(two);
        assert_eq!(s.next_request(method, Some(target)), Some(Flaw::Unverified));
        assert!(s.lost(), "out of step: nothing after is trusted");
        assert_eq!(s.next_request("POST", Some("/b")), Some(Flaw::Unverified));
    }
}

#[test]
fn leading_empty_lines_do_not_accumulate() {
    let mut s = Scanner::new(64);
    for _ in 0..1000 {
        s.feed(b"\r\n");
    }
    s.feed(b"\r");
    s.feed(b"\nGET / HTTP/1.1\r\n\r\n");
    assert!(!s.lost());
    assert_eq!(s.next_request("GET", Some("/")), None);
}

#[test]
fn lengths_are_digits_only() {
    assert_eq!(length(b"0"), Some(0));
    assert_eq!(length(b"123"), Some(123));
    for bad in [
        &b""[..],
        b"+1",
        b"-1",
        b"1 2",
        b"0x10",
        b"99999999999999999999999",
    ] {
        assert_eq!(length(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

/// Random bytes built from HTTP's pieces, cut anywhere: the scanner never panics, and
/// its verdicts do not depend on how the bytes arrive.
#[test]
fn any_bytes_in_any_pieces_give_the_same_verdicts() {
    const PIECES: &[&str] = &[
        "GET / HTTP/1.1",
        "POST /api/chat HTTP/1.0",
        "\r\n",
        "\n",
        "\r",
        " ",
        "\t",
        ":",
        ",",
        ";",
        "Content-Length: ",
        "content-length:",
        "Transfer-Encoding: chunked",
        "transfer-encoding: gzip, Chunked",
        "0",
        "1",
        "5",
        "a",
        "F",
        "ffffffffffffffffff",
        "99999999999999999999999",
        "x",
        "{}",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let mut bytes = Vec::new();
        for _ in 0..(next() % 40) {
            bytes.extend_from_slice(PIECES[(next() % PIECES.len() as u64) as usize].as_bytes());
        }
        let mut whole = Scanner::new(256);
        whole.feed(&bytes);
        let mut pieces = Scanner::new(256);
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let k = 1 + (next() % rest.len() as u64) as usize;
            pieces.feed(&rest[..k]);
            rest = &rest[k..];
        }
        assert_eq!(
            whole.heads,
            pieces.heads,
            "{:?}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(whole.state, pieces.state);
    }
}
