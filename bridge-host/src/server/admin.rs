//! The opt-in, host-only metrics listener (`[metrics] listen`) and its accept loop:
//! `GET /metrics` in the OpenMetrics text format, anything else 404.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;

use crate::proxy::relay::{full, RespBody};
use crate::proxy::Shared;

/// Time a client of the metrics listener has to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers one request on the metrics listener.
pub async fn serve(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, std::convert::Infallible> {
    let (status, ct, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            shared.metrics.token_windows(&shared.tokens.snapshot());
            (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                shared.metrics.encode(shared.audit.dropped()),
            )
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "GET /metrics\n".to_owned(),
        ),
    };
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    Ok(resp)
}

/// The opt-in Prometheus listener (host-only).
pub enum MetricsListener {
    Tcp(tokio::net::TcpListener),
    Unix(crate::net::listen::Listener),
}

impl MetricsListener {
    /// Binds `[metrics] listen`.
    pub fn bind(at: &protocol::config::MetricsListen) -> anyhow::Result<MetricsListener> {
        Ok(match at {
            protocol::config::MetricsListen::Tcp(a) => {
                let std = std::net::TcpListener::bind(a)
                    .map_err(|e| anyhow::anyhow!("[metrics] listen {a}: {e}"))?;
                std.set_nonblocking(true)?;
                MetricsListener::Tcp(tokio::net::TcpListener::from_std(std)?)
            }
            protocol::config::MetricsListen::Unix(p) => {
                let l = crate::net::listen::Listener::bind(
                    &protocol::ListenAddr::Unix(p.clone()),
                    0o600,
                    None,
                )
                .map_err(|e| anyhow::anyhow!("[metrics] listen: {e}"))?;
                MetricsListener::Unix(l)
            }
        })
    }
}

/// Serves `GET /metrics` until `stop`.
pub async fn metrics_loop(
    listener: MetricsListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    match &listener {
        MetricsListener::Tcp(l) => {
            let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
            println!("metrics on {addr}");
            tracing::info!(listen = %addr, "metrics");
        }
        MetricsListener::Unix(crate::net::listen::Listener::Unix { path, .. }) => {
            println!("metrics on unix:{}", path.display());
            tracing::info!(listen = %path.display(), "metrics");
        }
        MetricsListener::Unix(_) => {}
    }
    loop {
        let io: crate::net::listen::Conn = tokio::select! {
            _ = stop.changed() => break,
            a = async {
                match &listener {
                    MetricsListener::Tcp(l) => l.accept().await.map(|(s, _)| Box::new(s) as crate::net::listen::Conn),
                    MetricsListener::Unix(l) => l.accept().await.map(|(s, _)| s),
                }
            } => match a {
                Ok(io) => io,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| serve(shared.clone(), req));
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(io), svc)
                .await;
        });
    }
    if let MetricsListener::Unix(l) = &listener {
        l.cleanup();
    }
}
