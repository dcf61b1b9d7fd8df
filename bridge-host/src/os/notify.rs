//! systemd readiness (`Type=notify`): `READY=1` once every listener is bound,
//! `STOPPING=1` when draining starts. A no-op when `NOTIFY_SOCKET` is unset.
//! [`connect`] opens the socket while the daemon still has its start-up privileges, so
//! notifying still works after they are dropped.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;

/// The notify socket, connected before the privilege drop.
static CONNECTED: OnceLock<UnixDatagram> = OnceLock::new();

fn target() -> Option<(String, io::Result<SocketAddr>)> {
    let path = std::env::var_os("NOTIFY_SOCKET")?
        .to_string_lossy()
        .into_owned();
    let addr = match path.strip_prefix('@') {
        Some(abs) => SocketAddr::from_abstract_name(abs.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    Some((path, addr))
}

/// Connects to the service manager's socket now (a no-op without one): sending on a
/// connected socket needs no access to its path later.
pub fn connect() {
    let Some((path, addr)) = target() else {
        return;
    };
    let connected = addr.and_then(|a| {
        let s = UnixDatagram::unbound()?;
        s.connect_addr(&a)?;
        Ok(s)
    });
    match connected {
        Ok(s) => {
            let _ = CONNECTED.set(s);
        }
        Err(e) => {
            tracing::warn!(error = %e, socket = %path, "cannot connect to the service manager")
        }
    }
}

/// Sends one state line to the service manager, if there is one.
pub fn notify(state: &str) {
    if let Some(s) = CONNECTED.get() {
        if s.send(state.as_bytes()).is_ok() {
            return;
        }
    }
    let Some((path, addr)) = target() else {
        return;
    };
    let sent = addr.and_then(|a| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &a));
    if let Err(e) = sent {
        tracing::warn!(error = %e, socket = %path, "cannot notify the service manager");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notify");
        let rx = std::os::unix::net::UnixDatagram::bind(&p).unwrap();
        // The variable is read per call; tests in this module do not run concurrently with
        // another reader of NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &p);
        super::notify("READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
