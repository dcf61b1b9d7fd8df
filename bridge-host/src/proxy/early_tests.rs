//! Unit tests of the early answer's body (tokio's clock paused): SSE comments while
//! Ollama is silent, none on NDJSON, the body once it answers, the record's status.

use protocol::audit::AuditRecord;
use tokio::sync::oneshot;

use super::*;
use crate::proxy::record::TestAudit;
use crate::proxy::relay::Relay;

/// The audit log the exchanges of a test finish in.
struct Fixture(TestAudit);

impl Fixture {
    fn new() -> Fixture {
        Fixture(TestAudit::new())
    }

    /// An early answer whose rest waits for `rx`, then relays `text` or fails.
    fn answer(
        &self,
        kind: StreamKind,
        rx: oneshot::Receiver<Result<&'static str, BridgeError>>,
    ) -> Response<RespBody> {
        let ex = self.0.exchange();
        answer(kind, ex, move |ex| async move {
            match rx.await.unwrap() {
                Ok(text) => {
                    let body = http_body_util::Full::new(Bytes::from(text));
                    Relay::new(body, kind, Duration::from_secs(60), ex, None).boxed_unsync()
                }
                Err(e) => failed(kind, e, ex, None),
            }
        })
    }

    fn records(&self) -> Vec<AuditRecord> {
        self.0.records()
    }
}

async fn next(b: &mut RespBody, within: Duration) -> Option<Bytes> {
    match tokio::time::timeout(within, b.frame()).await {
        Ok(Some(Ok(f))) => f.into_data().ok(),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn sse_gets_a_comment_every_5s_until_ollama_answers() {
    let f = Fixture::new();
    let (tx, rx) = oneshot::channel();
    let resp = f.answer(StreamKind::Sse, rx);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    assert!(resp
        .headers()
        .contains_key(super::super::respond::REQUEST_ID_HEADER));
    let mut body = resp.into_body();
    assert_eq!(next(&mut body, Duration::from_millis(4900)).await, None);
    assert_eq!(
        next(&mut body, Duration::from_millis(200)).await.as_deref(),
        Some(WAITING)
    );
    assert_eq!(
        next(&mut body, Duration::from_secs(5)).await.as_deref(),
        Some(WAITING)
    );
    tx.send(Ok("data: {\"x\":1}\n\n")).unwrap();
    let d = next(&mut body, Duration::from_secs(1)).await.unwrap();
    assert_eq!(d, "data: {\"x\":1}\n\n");
    assert!(body.frame().await.is_none());
    drop(body);
    let recs = f.records();
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].status, recs[0].reason), (200, None));
}

#[tokio::test(start_paused = true)]
async fn ndjson_waits_silently_then_ends_with_the_error_line() {
    let f = Fixture::new();
    let (tx, rx) = oneshot::channel();
    let resp = f.answer(StreamKind::Ndjson, rx);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/x-ndjson");
    let mut body = resp.into_body();
    assert_eq!(
        next(&mut body, Duration::from_secs(12)).await,
        None,
        "no comments"
    );
    let e = BridgeError::new(
        Reason::UpstreamTimeout,
        "Ollama sent no answer (header_timeout)",
    );
    tx.send(Err(e)).unwrap();
    let line = next(&mut body, Duration::from_secs(1)).await.unwrap();
    let v: Value = serde_json::from_slice(&line).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("header_timeout"),
        "{v}"
    );
    assert!(line.ends_with(b"\n"));
    assert!(body.frame().await.is_none());
    drop(body);
    let recs = f.records();
    assert_eq!(recs[0].status, 200, "the status sent");
    assert_eq!(recs[0].reason, Some(Reason::UpstreamTimeout));
}

#[tokio::test(start_paused = true)]
async fn a_client_gone_while_waiting_is_recorded_with_the_status_sent() {
    let f = Fixture::new();
    let (tx, rx) = oneshot::channel();
    let mut body = f.answer(StreamKind::Ndjson, rx).into_body();
    assert_eq!(next(&mut body, Duration::from_secs(3)).await, None);
    drop(body);
    assert!(tx.is_closed(), "the waiting rest was dropped with the body");
    let recs = f.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].status, 200);
    assert_eq!(recs[0].reason, Some(Reason::ClientClosed));
}
