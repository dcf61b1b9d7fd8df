//! Unit tests of the relay's states: frames through, error lines, cuts, idle
//! timeouts, a client gone, transforms; each checks the one record written.

use std::collections::VecDeque;

use protocol::audit::AuditRecord;

use super::*;
use crate::proxy::record::TestAudit;

/// An upstream body that yields these steps, then ends.
enum Step {
    Data(&'static str),
    Fail,
    /// Never ready again (Ollama went silent).
    Silent,
}

struct Script(VecDeque<Step>);

impl Body for Script {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.0.pop_front() {
            None => Poll::Ready(None),
            Some(Step::Data(d)) => Poll::Ready(Some(Ok(Frame::data(Bytes::from(d))))),
            Some(Step::Fail) => Poll::Ready(Some(Err(std::io::Error::other("reset")))),
            Some(Step::Silent) => {
                self.0.push_front(Step::Silent);
                Poll::Pending
            }
        }
    }
}

/// The audit log the exchanges of a test finish in.
struct Fixture(TestAudit);

impl Fixture {
    fn new() -> Fixture {
        Fixture(TestAudit::new())
    }

    fn relay(&self, steps: Vec<Step>, kind: StreamKind) -> Relay<Script> {
        let ex = self.0.exchange();
        Relay::new(Script(steps.into()), kind, Duration::from_secs(5), ex, None)
    }

    fn records(&self) -> Vec<AuditRecord> {
        self.0.records()
    }
}

/// Everything the body yields, and how it ended.
async fn drain<B: Body<Data = Bytes> + Unpin>(b: &mut B) -> (Vec<Bytes>, Option<String>) {
    let mut frames = Vec::new();
    while let Some(f) = b.frame().await {
        match f {
            Ok(f) => frames.push(f.into_data().ok().unwrap()),
            Err(_) => return (frames, Some("error".into())),
        }
    }
    (frames, None)
}

const LAST: &str = "{\"done\":true,\"prompt_eval_count\":7,\"eval_count\":3}\n";

#[tokio::test]
async fn frames_pass_one_by_one_and_the_record_comes_at_the_end() {
    let f = Fixture::new();
    let mut r = f.relay(
        vec![Step::Data("{\"a\":1}\n"), Step::Data(LAST)],
        StreamKind::Ndjson,
    );
    let (frames, end) = drain(&mut r).await;
    assert_eq!(frames, [Bytes::from("{\"a\":1}\n"), Bytes::from(LAST)]);
    assert_eq!(end, None);
    assert!(r.is_end_stream());
    drop(r);
    let recs = f.records();
    assert_eq!(recs.len(), 1, "one record, not a second one on drop");
    let rec = &recs[0];
    assert_eq!(rec.reason, None);
    assert_eq!(rec.bytes_out, (8 + LAST.len()) as u64);
    assert_eq!(
        (rec.prompt_tokens, rec.completion_tokens),
        (Some(7), Some(3))
    );
}

#[tokio::test]
async fn a_broken_upstream_ends_an_ndjson_stream_with_an_error_line() {
    let f = Fixture::new();
    let mut r = f.relay(
        vec![Step::Data("{\"a\":1}\n"), Step::Fail],
        StreamKind::Ndjson,
    );
    let (frames, end) = drain(&mut r).await;
    assert_eq!(
        end, None,
        "the stream ends cleanly, with the error in its own format"
    );
    let last: serde_json::Value = serde_json::from_slice(frames.last().unwrap()).unwrap();
    assert!(
        last["error"].as_str().unwrap().contains("broke off"),
        "{last}"
    );
    drop(r);
    assert_eq!(f.records()[0].reason, Some(Reason::UpstreamError));
}

#[tokio::test]
async fn a_broken_opaque_body_is_cut() {
    let f = Fixture::new();
    let mut r = f.relay(vec![Step::Data("abc"), Step::Fail], StreamKind::Opaque);
    let (frames, end) = drain(&mut r).await;
    assert_eq!(frames, [Bytes::from("abc")]);
    assert!(
        end.is_some(),
        "no error frame exists for an opaque body: the client sees a cut"
    );
    drop(r);
    assert_eq!(f.records()[0].reason, Some(Reason::UpstreamError));
}

#[tokio::test(start_paused = true)]
async fn silence_past_the_idle_timeout_ends_an_sse_stream_with_an_error_event() {
    let f = Fixture::new();
    let mut r = f.relay(
        vec![Step::Data("data: {}\n\n"), Step::Silent],
        StreamKind::Sse,
    );
    let (frames, end) = drain(&mut r).await;
    assert_eq!(end, None);
    let last = std::str::from_utf8(frames.last().unwrap()).unwrap();
    assert!(last.starts_with("data: {\"error\""), "{last}");
    assert!(last.contains("idle_timeout"), "{last}");
    drop(r);
    assert_eq!(f.records()[0].reason, Some(Reason::UpstreamTimeout));
}

#[tokio::test]
async fn dropped_before_the_end_is_recorded_as_client_closed() {
    let f = Fixture::new();
    let mut r = f.relay(vec![Step::Data("x"), Step::Data("y")], StreamKind::Ndjson);
    assert!(r.frame().await.is_some());
    drop(r);
    let recs = f.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].reason, Some(Reason::ClientClosed));
    assert_eq!(recs[0].bytes_out, 1);
}

/// Upper-cases what passes, and says "end" at the end.
struct Shout;

impl Transform for Shout {
    fn feed(&mut self, data: &[u8]) -> Bytes {
        Bytes::from(data.to_ascii_uppercase())
    }
    fn finish(&mut self) -> Bytes {
        Bytes::from_static(b"end")
    }
    fn fail(&mut self, _: &BridgeError) -> Bytes {
        Bytes::from_static(b"failed")
    }
}

#[tokio::test]
async fn a_transform_rewrites_while_tokens_are_read_from_the_upstream() {
    let f = Fixture::new();
    let r = f.relay(
        vec![Step::Data("abc\n"), Step::Data(LAST)],
        StreamKind::Ndjson,
    );
    let mut r = r.with_transform(Box::new(Shout));
    let (frames, _) = drain(&mut r).await;
    assert_eq!(frames[0], Bytes::from("ABC\n"));
    assert_eq!(frames.last().unwrap(), &Bytes::from("end"));
    drop(r);
    let rec = &f.records()[0];
    assert_eq!(rec.completion_tokens, Some(3));
    assert_eq!(rec.bytes_out, (4 + LAST.len() + 3) as u64);
}

#[tokio::test]
async fn a_broken_opaque_body_is_cut_even_when_rewritten() {
    let f = Fixture::new();
    let r = f.relay(vec![Step::Data("abc"), Step::Fail], StreamKind::Opaque);
    let mut r = r.with_transform(Box::new(Shout));
    let (_, end) = drain(&mut r).await;
    assert!(
        end.is_some(),
        "a transform does not turn a cut into a clean end"
    );
    drop(r);
    assert_eq!(f.records()[0].reason, Some(Reason::UpstreamError));
}

/// Says it salvaged two tool calls.
struct Salvaged;

impl Transform for Salvaged {
    fn feed(&mut self, data: &[u8]) -> Bytes {
        Bytes::copy_from_slice(data)
    }
    fn finish(&mut self) -> Bytes {
        Bytes::new()
    }
    fn fail(&mut self, _: &BridgeError) -> Bytes {
        Bytes::new()
    }
    fn tool_calls_salvaged(&self) -> usize {
        2
    }
}

#[tokio::test]
async fn salvaged_tool_calls_reach_the_record() {
    let f = Fixture::new();
    let r = f.relay(vec![Step::Data(LAST)], StreamKind::Ndjson);
    let mut r = r.with_transform(Box::new(Salvaged));
    drain(&mut r).await;
    drop(r);
    assert_eq!(f.records()[0].tool_calls_salvaged, Some(2));
}
