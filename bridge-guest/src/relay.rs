//! The accept loop and the relay: every TCP connection accepted on the sandbox's
//! loopback is handed over (`crate::handoff`) or gets a fresh connection to bridge-host,
//! and bytes are copied both ways (half-close included).
//! When bridge-host cannot be reached, the guest answers the client itself with a 502
//! JSON error naming the socket, instead of resetting the connection.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use protocol::backoff::Backoff;
use protocol::error::{BridgeError, Reason};
use protocol::listen::ConnectAddr;
use protocol::route::Route;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

use crate::handoff::Channel;

/// Longest request head read before answering a 502.
const MAX_HEAD: usize = 64 * 1024;

/// A connection to bridge-host, whatever the transport.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Opens a connection to bridge-host.
pub async fn connect(addr: &ConnectAddr) -> io::Result<Box<dyn Stream>> {
    match addr {
        ConnectAddr::Unix(p) => Ok(Box::new(UnixStream::connect(p).await?)),
        ConnectAddr::Vsock { cid, port } => Ok(Box::new(
            tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, *port)).await?,
        )),
    }
}

/// Accepts and hands over (through `handoff`, while it has a control connection) or
/// relays until the task is dropped.
pub async fn serve(listener: TcpListener, to: ConnectAddr, handoff: Option<Arc<Channel>>) {
    let to = Arc::new(to);
    let mut backoff = Backoff::new();
    loop {
        let (client, _) = match listener.accept().await {
            Ok(c) => {
                backoff.succeeded();
                c
            }
            Err(e) => {
                eprintln!("bridge-guest: accept failed: {e}; backing off");
                tokio::time::sleep(backoff.failed()).await;
                continue;
            }
        };
        if let Some(ch) = &handoff {
            let _ = client.set_nodelay(true);
            if ch.pass(&client) {
                continue; // bridge-host has it now; our descriptor closes here
            }
        }
        let to = to.clone();
        tokio::spawn(async move { relay_one(client, &to).await });
    }
}

async fn relay_one(mut client: TcpStream, to: &ConnectAddr) {
    let _ = client.set_nodelay(true);
    match connect(to).await {
        Ok(mut host) => {
            let _ = crate::copy::both(&mut client, &mut *host).await;
        }
        Err(e) => {
            let _ = answer_unreachable(&mut client, to, &e).await;
        }
    }
}

/// Reads the request head, answers 502 in the right error format, and closes politely.
async fn answer_unreachable(
    client: &mut TcpStream,
    to: &ConnectAddr,
    err: &io::Error,
) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let read_head = async {
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = client.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read_head).await;
    let path = head
        .split(|&b| b == b' ')
        .nth(1)
        .and_then(|p| std::str::from_utf8(p).ok())
        .unwrap_or("/");
    let e = BridgeError::new(
        Reason::UpstreamUnreachable,
        format!("cannot reach bridge-host at {to}: {err}"),
    );
    let resp = e.raw_http(Route::error_format_for_path(path));
    client.write_all(&resp).await?;
    client.shutdown().await?;
    // Drain what the client still sends (its body) so closing does not reset the answer.
    let drain = async {
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0usize;
        while total < 8 << 20 {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    Ok(())
}
