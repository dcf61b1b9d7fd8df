//! The double's HTTP server: Host check, request recording, routing.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use super::{models, native, openai, Recorded, State};

/// The double's response body.
pub type DBody = UnsyncBoxBody<Bytes, Infallible>;

/// A body fed chunk by chunk from a channel.
pub struct ChanBody(pub mpsc::Receiver<Bytes>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

pub fn full(status: StatusCode, ct: &str, body: impl Into<Bytes>) -> Response<DBody> {
    Response::builder()
        .status(status)
        .header("content-type", ct)
        .body(Full::new(body.into()).boxed_unsync())
        .expect("valid response")
}

pub fn json(status: StatusCode, v: &serde_json::Value) -> Response<DBody> {
    full(
        status,
        "application/json; charset=utf-8",
        serde_json::to_vec(v).expect("json"),
    )
}

pub fn error(status: StatusCode, msg: &str) -> Response<DBody> {
    json(status, &serde_json::json!({ "error": msg }))
}

pub fn stream(ct: &str, rx: mpsc::Receiver<Bytes>) -> Response<DBody> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", ct)
        .body(ChanBody(rx).boxed_unsync())
        .expect("valid response")
}

pub async fn serve(listener: tokio::net::TcpListener, state: Arc<State>) {
    loop {
        let Ok((io, _)) = listener.accept().await else {
            continue;
        };
        let _ = io.set_nodelay(true);
        let st = state.clone();
        let mut stopped = state.stopped.subscribe();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(st.clone(), req));
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(io), svc);
            // A stopped double is gone entirely: open keep-alive connections close too.
            tokio::select! {
                _ = conn => {}
                _ = stopped.wait_for(|s| *s) => {}
            }
        });
    }
}

/// Ollama's Host check when bound to loopback: localhost, *.localhost, *.local,
/// *.internal, or a loopback/private/unspecified IP, with any port.
pub fn host_allowed(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(
            host,
            |(h, p)| if p.parse::<u16>().is_ok() { h } else { host },
        )
    };
    let h = h.to_ascii_lowercase();
    if h == "localhost"
        || h.ends_with(".localhost")
        || h.ends_with(".local")
        || h.ends_with(".internal")
    {
        return true;
    }
    if let Ok(hn) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        if hn.trim().eq_ignore_ascii_case(&h) {
            return true;
        }
    }
    match h.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            v4.is_loopback() || v4.is_private() || v4.is_unspecified() || v4.is_link_local()
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xfe00) == 0xfc00
        }
        Err(_) => false,
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<DBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    if path == "/_double/requests" {
        let v = serde_json::to_value(&*state.requests.lock().unwrap()).expect("json");
        return Ok(json(StatusCode::OK, &v));
    }
    // bridge-host's probe at start is not one of a test's requests.
    let startup_probe = parts
        .headers
        .contains_key(protocol::route::STARTUP_PROBE_HEADER);
    if !startup_probe {
        state.requests.lock().unwrap().push(Recorded {
            method: parts.method.to_string(),
            path: parts.uri.to_string(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.to_vec(),
        });
    }
    // Ollama's Host check: 403 with an empty body.
    let host = parts
        .headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !host_allowed(host) {
        return Ok(full(StatusCode::FORBIDDEN, "text/plain", Bytes::new()));
    }
    let m = parts.method.as_str();
    let _turn = match (&state.parallel, m) {
        (Some(sem), "POST") => sem.clone().acquire_owned().await.ok(),
        _ => None,
    };
    if m == "POST" {
        if let Some(resp) = load(&state).await {
            return Ok(resp);
        }
    }
    let resp = match (m, path.as_str()) {
        ("GET" | "HEAD", "/") => full(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "Ollama is running",
        ),
        ("GET" | "HEAD", "/api/version") => {
            let v = state.config.lock().unwrap().version.clone();
            json(StatusCode::OK, &serde_json::json!({ "version": v }))
        }
        ("GET" | "HEAD", "/api/tags") => models::tags(&state),
        ("GET", "/api/ps") => models::ps(&state),
        ("POST", "/api/show") => models::show(&state, &body),
        ("POST", "/api/chat") => native::chat(&state, &body).await,
        ("POST", "/api/generate") => native::generate(&state, &body).await,
        ("POST", "/api/embed") => models::embed(&state, &body, false),
        ("POST", "/api/embeddings") => models::embed(&state, &body, true),
        ("POST", "/api/pull") => models::pull(&body),
        ("POST", "/api/copy" | "/api/create" | "/api/push") | ("DELETE", "/api/delete") => {
            json(StatusCode::OK, &serde_json::json!({"status":"success"}))
        }
        ("GET", "/v1/models") => openai::models(&state),
        ("GET", p) if p.starts_with("/v1/models/") => {
            openai::model(&state, &p["/v1/models/".len()..])
        }
        ("POST", "/v1/chat/completions") => openai::chat(&state, &body).await,
        ("POST", "/v1/completions") => openai::completions(&state, &body).await,
        ("POST", "/v1/embeddings") => openai::embeddings(&state, &body),
        _ => full(StatusCode::NOT_FOUND, "text/plain", "404 page not found"),
    };
    Ok(resp)
}

/// A model load before the headers (`hold_headers`, `head_delay`), and its failure
/// (`head_error`).
async fn load(state: &State) -> Option<Response<DBody>> {
    let script = state.config.lock().unwrap().script.clone();
    if script.hold_headers {
        // Counted while held: also when the request is dropped (the bridge hung up).
        struct Held<'a>(&'a State);
        impl Drop for Held<'_> {
            fn drop(&mut self) {
                self.0.held.send_modify(|n| *n -= 1);
            }
        }
        state.held.send_modify(|n| *n += 1);
        state.held_total.send_modify(|n| *n += 1);
        let _held = Held(state);
        if let Ok(p) = state.heads.acquire().await {
            p.forget();
        }
    }
    if !script.head_delay.is_zero() {
        tokio::time::sleep(script.head_delay).await;
    }
    let (code, msg) = script.head_error?;
    let status = StatusCode::from_u16(code).expect("a valid status");
    Some(error(status, &msg))
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn host_check() {
        for ok in [
            "localhost",
            "localhost:11434",
            "127.0.0.1:11434",
            "[::1]:11434",
            "x.localhost",
            "box.local",
            "h.internal:1",
            "10.1.2.3",
            "192.168.0.1:80",
        ] {
            assert!(host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.com",
            "evil.com:11434",
            "",
            "8.8.8.8",
            "localhost.evil.com",
        ] {
            assert!(!host_allowed(bad), "{bad}");
        }
    }
}
