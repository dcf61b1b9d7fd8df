//! The one pooled HTTP/1.1 client to Ollama, with the connect and header timeouts of
//! `[upstream]` mapped to the bridge's error contract (502 unreachable, 504 no answer).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use protocol::error::{BridgeError, Reason};
use protocol::route::FORWARDED_HEADER;

use super::known::Known;
use crate::limits::queue::FairQueue;

/// Request headers passed on to Ollama; everything else stays behind.
const FORWARDED: [header::HeaderName; 3] =
    [header::ACCEPT, header::USER_AGENT, header::ACCEPT_LANGUAGE];

/// The upstream client, and the fair queue in front of the server.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Chunks>,
    pub cfg: protocol::Upstream,
    host: HeaderValue,
    /// `None` with `max_parallel = "off"`.
    pub queue: Option<Arc<FairQueue>>,
    /// What the refresher last found (several servers only; kept like the queue).
    pub known: Arc<Known>,
}

impl Upstream {
    /// The client for `cfg`. After a reload, `prev` is the running one: a queue for the
    /// same server is kept (requests holding or waiting for its slots stay in it) with
    /// the new `max_parallel`.
    pub fn new(cfg: protocol::Upstream, prev: Option<&Upstream>) -> Upstream {
        let same = prev.filter(|p| p.cfg.base == cfg.base);
        let known = same.map_or_else(Arc::default, |p| p.known.clone());
        let kept = same.and_then(|p| p.queue.clone());
        let queue = cfg.max_parallel.map(|n| match kept {
            Some(q) => {
                q.set_max(n);
                q
            }
            None => FairQueue::new(n),
        });
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(cfg.connect_timeout));
        conn.set_nodelay(true);
        conn.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(conn);
        let host = HeaderValue::from_str(&cfg.authority).expect("authority was validated");
        Upstream {
            client,
            cfg,
            host,
            queue,
            known,
        }
    }

    /// Requests the server works on plus those waiting for it (0 without a queue).
    pub fn load(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| {
            let v = q.view();
            v.running as usize + v.waiting as usize
        })
    }

    /// Sends a checked request; `body` is what the policy saw, re-serialised.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        client_headers: &HeaderMap,
        content_type: Option<&'static str>,
        body: impl Into<Chunks>,
    ) -> Result<Response<Incoming>, BridgeError> {
        self.send_marked(method, path, client_headers, content_type, body, None)
            .await
    }

    /// [`Self::send`], with the bridge's own `(name, value)` header added (a sandbox's
    /// headers pass only through the `FORWARDED` list).
    pub async fn send_marked(
        &self,
        method: Method,
        path: &str,
        client_headers: &HeaderMap,
        content_type: Option<&'static str>,
        body: impl Into<Chunks>,
        mark: Option<(&'static str, HeaderValue)>,
    ) -> Result<Response<Incoming>, BridgeError> {
        let uri = format!("{}{}", self.cfg.base, path);
        let mut req = Request::builder().method(method).uri(&uri);
        let h = req.headers_mut().expect("builder is valid");
        if let Some((name, v)) = mark {
            h.insert(name, v);
        }
        for name in FORWARDED {
            if let Some(v) = client_headers.get(&name) {
                h.insert(name, v.clone());
            }
        }
        h.insert(header::HOST, self.host.clone());
        h.insert(FORWARDED_HEADER, HeaderValue::from_static("1"));
        if let Some(ct) = content_type {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        let req = req.body(body.into()).map_err(|e| {
            BridgeError::new(
                Reason::Internal,
                format!("building the upstream request: {e}"),
            )
        })?;
        match tokio::time::timeout(self.cfg.header_timeout, self.client.request(req)).await {
            Err(_) => Err(BridgeError::new(
                Reason::UpstreamTimeout,
                format!(
                    "Ollama sent no answer within {:?} (header_timeout)",
                    self.cfg.header_timeout
                ),
            )),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() => Err(BridgeError::new(
                Reason::UpstreamUnreachable,
                format!(
                    "cannot reach Ollama: {} (is it running? connect_timeout {:?})",
                    root_cause(&e),
                    self.cfg.connect_timeout
                ),
            )),
            Ok(Err(e)) => Err(BridgeError::new(
                Reason::UpstreamError,
                format!("Ollama failed: {}", root_cause(&e)),
            )),
        }
        // Which upstream: for the host log and `bridge-host status`, never the sandbox.
        .map_err(|e| e.with_detail(format!("upstream {}", self.cfg.base)))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let root = cur.to_string();
    let top = e.to_string();
    if root == top || e.source().is_none() {
        top
    } else {
        format!("{top}: {root}")
    }
}

/// A request body sent as the pieces it is made of (a checked body's re-serialised
/// fields and the slices it kept as written), with its exact length: no copy into one
/// buffer.
#[derive(Debug, Default)]
pub struct Chunks {
    pieces: VecDeque<Bytes>,
    left: u64,
}

impl From<Vec<Bytes>> for Chunks {
    fn from(v: Vec<Bytes>) -> Chunks {
        let left = v.iter().map(|b| b.len() as u64).sum();
        Chunks {
            pieces: v.into_iter().filter(|b| !b.is_empty()).collect(),
            left,
        }
    }
}

impl From<Bytes> for Chunks {
    fn from(b: Bytes) -> Chunks {
        Chunks::from(vec![b])
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.pieces.pop_front() {
            Some(b) => {
                self.left -= b.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}
