//! Listeners: one per sandbox, on a unix socket, an AF_VSOCK port or a vsock-uds socket
//! (Firecracker's convention), behind one interface. The transport ends here: everything
//! above sees a byte stream and the peer identity the kernel reports.
//!
//! Opening a listener ([`Bound::bind`]: directory, stale socket, bind, mode, owner) needs
//! no async runtime, so the privileged monitor can do it and pass the descriptor on;
//! [`Listener::adopt`] serves such a descriptor.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    bind, getsockname, getsockopt, listen, socket, sockopt, AddressFamily, Backlog, SockFlag,
    SockType, SockaddrLike, SockaddrStorage, UnixAddr, VsockAddr,
};
use protocol::audit::Peer;
use protocol::ListenAddr;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{UnixListener, UnixStream};
use tokio_vsock::{VsockListener, VMADDR_CID_ANY};

use crate::net::hangup::Hangup;

/// A connection's byte stream, whatever the transport.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A boxed connection.
pub type Conn = Box<dyn Io>;

/// A connection as accepted, before anything was read from it.
pub enum Accepted {
    /// On a unix socket: the stream itself (its first bytes may ask for the hand-off),
    /// with the peer's credentials.
    Unix(UnixStream, Option<Peer>),
    /// On AF_VSOCK.
    Other(Conn, Option<Peer>),
}

/// Why a listener could not be opened.
#[derive(Debug, Error)]
pub enum ListenError {
    #[error("cannot create directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("{path} exists and is not a socket; refusing to replace it (remove it or choose another path)")]
    NotASocket { path: PathBuf },
    #[error("another process is listening on {path} (is bridge-host already running?)")]
    InUse { path: PathBuf },
    #[error("cannot remove stale socket {path}: {source}")]
    Stale { path: PathBuf, source: io::Error },
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("cannot set mode or owner of {path}: {source}")]
    Perms { path: PathBuf, source: io::Error },
    #[error("cannot serve the listener opened for {addr}: {source}")]
    Adopt { addr: String, source: io::Error },
}

/// A listening socket opened without an async runtime (by the daemon, or by the
/// privileged monitor, which passes it on).
#[derive(Debug)]
pub struct Bound(OwnedFd);

/// How many connections wait for `accept` (what tokio's own `bind` asks for).
const BACKLOG: i32 = 1024;

impl Bound {
    /// Opens the listener for `addr`, applying socket mode and owner on unix sockets.
    pub fn bind(
        addr: &ListenAddr,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<Bound, ListenError> {
        match addr {
            ListenAddr::Unix(path) | ListenAddr::VsockUds(path) => {
                Ok(Bound(bind_unix(path, mode, owner)?))
            }
            ListenAddr::Vsock { port } => {
                let bind_err = |source: io::Error| ListenError::Bind {
                    addr: addr.to_string(),
                    source: explain_vsock(source),
                };
                let fd = listening(AddressFamily::Vsock, &VsockAddr::new(VMADDR_CID_ANY, *port))
                    .map_err(bind_err)?;
                Ok(Bound(fd))
            }
        }
    }

    /// The descriptor, to pass on.
    pub fn into_fd(self) -> OwnedFd {
        self.0
    }
}

/// A close-on-exec stream socket of `family`, bound to `addr` and listening.
fn listening(family: AddressFamily, addr: &dyn SockaddrLike) -> io::Result<OwnedFd> {
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    bind(fd.as_raw_fd(), addr)?;
    listen(&fd, Backlog::new(BACKLOG)?)?;
    Ok(fd)
}

/// An open listener.
#[derive(Debug)]
pub enum Listener {
    /// A unix socket (also the host side of Firecracker's vsock-uds convention).
    Unix { inner: UnixListener, path: PathBuf },
    /// AF_VSOCK on any CID.
    Vsock { inner: VsockListener },
}

impl Listener {
    /// Opens the listener for `addr`, applying socket mode and owner on unix sockets.
    /// Needs the async runtime.
    pub fn bind(
        addr: &ListenAddr,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<Listener, ListenError> {
        Listener::adopt(addr, Bound::bind(addr, mode, owner)?.into_fd())
    }

    /// Serves `fd`, a listening socket opened for `addr` (by [`Bound::bind`], here or in
    /// the privileged monitor). Refuses a descriptor that is not a listening socket of
    /// the address's family. Needs the async runtime.
    pub fn adopt(addr: &ListenAddr, fd: OwnedFd) -> Result<Listener, ListenError> {
        let fail = |source: io::Error| ListenError::Adopt {
            addr: addr.to_string(),
            source,
        };
        let family = getsockname::<SockaddrStorage>(fd.as_raw_fd())
            .map_err(|e| fail(e.into()))?
            .family();
        let want = match addr {
            ListenAddr::Unix(_) | ListenAddr::VsockUds(_) => AddressFamily::Unix,
            ListenAddr::Vsock { .. } => AddressFamily::Vsock,
        };
        let listens = getsockopt(&fd, sockopt::AcceptConn).map_err(|e| fail(e.into()))?;
        if family != Some(want) || !listens {
            return Err(fail(io::Error::other(format!(
                "not a listening {want:?} socket"
            ))));
        }
        match addr {
            ListenAddr::Unix(path) | ListenAddr::VsockUds(path) => {
                let std = std::os::unix::net::UnixListener::from(fd);
                std.set_nonblocking(true).map_err(fail)?;
                let inner = UnixListener::from_std(std).map_err(fail)?;
                Ok(Listener::Unix {
                    inner,
                    path: path.clone(),
                })
            }
            ListenAddr::Vsock { .. } => Ok(Listener::Vsock {
                inner: VsockListener::from(fd),
            }),
        }
    }

    /// Accepts one connection with the kernel's view of the peer.
    pub async fn accept(&self) -> io::Result<(Conn, Option<Peer>)> {
        match self.accept_raw().await? {
            Accepted::Unix(s, peer) => Ok((Box::new(s), peer)),
            Accepted::Other(c, peer) => Ok((c, peer)),
        }
    }

    /// Accepts one connection as it is (see [`Accepted`]); [`unix_conn`] makes a unix
    /// one a [`Conn`].
    pub async fn accept_raw(&self) -> io::Result<Accepted> {
        match self {
            Listener::Unix { inner, .. } => {
                let (stream, _) = inner.accept().await?;
                let peer = stream.peer_cred().ok().map(|c| Peer::Unix {
                    uid: c.uid(),
                    gid: c.gid(),
                    pid: c.pid(),
                });
                Ok(Accepted::Unix(stream, peer))
            }
            Listener::Vsock { inner } => {
                let (stream, addr) = inner.accept().await?;
                Ok(Accepted::Other(
                    Box::new(stream),
                    Some(Peer::Vsock { cid: addr.cid() }),
                ))
            }
        }
    }

    /// The vsock port actually bound (for `vsock:` listeners).
    pub fn vsock_port(&self) -> Option<u32> {
        match self {
            Listener::Vsock { inner } => inner.local_addr().ok().map(|a| a.port()),
            Listener::Unix { .. } => None,
        }
    }

    /// Removes what the listener left on the filesystem.
    pub fn cleanup(&self) {
        match self {
            Listener::Unix { path, .. } => {
                // After the privilege drop the directory may not be ours: the socket then
                // stays, and the next start (as root) replaces it as stale.
                if let Err(e) = std::fs::remove_file(path) {
                    tracing::debug!(path = %path.display(), error = %e, "socket not removed");
                }
            }
            Listener::Vsock { .. } => {}
        }
    }
}

/// A unix connection as a [`Conn`]; with `hangup`, also its [`Hangup`] watch.
pub fn unix_conn(stream: UnixStream, hangup: bool) -> io::Result<(Conn, Option<Hangup>)> {
    if hangup {
        let (stream, h) = Hangup::watch(stream)?;
        return Ok((Box::new(stream), Some(h)));
    }
    Ok((Box::new(stream), None))
}

/// Adds the usual cause to an AF_VSOCK bind error.
fn explain_vsock(e: io::Error) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(97) => {
            " (AF_VSOCK is not available: load the vhost_vsock or vsock module, or use vsock-uds: for Firecracker / Cloud Hypervisor)"
        }
        Some(98) => " (the port is in use)",
        _ => "",
    };
    io::Error::new(e.kind(), format!("{e}{hint}"))
}

fn bind_unix(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<OwnedFd, ListenError> {
    // A directory created (or taken back) here is chowned to `owner` only once the
    // socket is in it: a daemon without root (systemd's CAP_CHOWN only) could not bind in
    // it after that.
    let mut hand_over = None;
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            super::dirs::create_socket_dir(dir).map_err(|source| ListenError::Dir {
                path: dir.to_owned(),
                source,
            })?;
            hand_over = Some(dir);
        } else if owner.is_some() {
            hand_over = reclaim_dir(dir);
        }
    }
    let bound = replace_and_bind(path, mode, owner);
    if let Some((uid, gid)) = owner {
        if let Some(b) = super::dirs::unreachable(path, uid, gid) {
            tracing::warn!(
                socket = %path.display(),
                "socket_owner {uid}:{gid} cannot reach its socket: it cannot search {b}; make the directory passable (chmod o+x {d}, e.g. mode 0711) or move the socket",
                d = b.dir.display()
            );
        }
    }
    if let (Some(dir), Some((uid, gid))) = (hand_over, owner) {
        // Also when the bind failed: a directory taken back goes back to its owner.
        let handed = chown(dir, uid, gid);
        if bound.is_ok() {
            handed?;
        }
    }
    bound
}

/// Replaces a stale socket (never a live one, never another kind of file), binds, and
/// sets the socket's mode and owner.
fn replace_and_bind(
    path: &Path,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<OwnedFd, ListenError> {
    if std::fs::symlink_metadata(path).is_ok() {
        remove_stale(path)?;
    }
    let bind_err = |source: io::Error| ListenError::Bind {
        addr: format!("unix:{}", path.display()),
        source,
    };
    let addr = UnixAddr::new(path).map_err(|e| bind_err(e.into()))?;
    let listener = listening(AddressFamily::Unix, &addr).map_err(bind_err)?;
    apply_perms(path, mode, owner)?;
    Ok(listener)
}

/// Removes the socket at `path` if nobody listens on it; refuses a live socket and any
/// other kind of file.
pub fn remove_stale(path: &Path) -> Result<(), ListenError> {
    let meta = std::fs::symlink_metadata(path).map_err(|source| ListenError::Stale {
        path: path.to_owned(),
        source,
    })?;
    if !meta.file_type().is_socket() {
        return Err(ListenError::NotASocket {
            path: path.to_owned(),
        });
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ListenError::InUse {
            path: path.to_owned(),
        });
    }
    std::fs::remove_file(path).map_err(|source| ListenError::Stale {
        path: path.to_owned(),
        source,
    })
}

/// A daemon restarted without root (systemd: `User=` with `CAP_CHOWN`) finds its
/// socket's directory handed to `socket_owner` by the previous run, mode 0750: it could
/// neither remove the stale socket nor bind there. With `CAP_CHOWN` it takes the
/// directory back for the bind (the sandbox, no longer its owner, cannot write in it
/// meanwhile) and returns it to `socket_owner` afterwards. Root needs none of this.
fn reclaim_dir(dir: &Path) -> Option<&Path> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid();
    let meta = std::fs::symlink_metadata(dir).ok()?;
    if me.is_root() || !meta.is_dir() || meta.uid() == me.as_raw() {
        return None;
    }
    match std::os::unix::fs::lchown(dir, Some(me.as_raw()), None) {
        Ok(()) => Some(dir),
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot take the socket directory back for the bind");
            None
        }
    }
}

/// Sets a socket's mode and (optionally) owner, never through a symlink: the socket's
/// directory may belong to the sandbox (`socket_owner`), which could swap the socket for
/// a link to a host file between the bind and here. A link makes this fail; a swap that
/// races the check still cannot reach the link's target (`AT_SYMLINK_NOFOLLOW`, `lchown`).
pub fn apply_perms(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), ListenError> {
    let perms_err = |source: io::Error| ListenError::Perms {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {}
        Ok(_) => {
            return Err(ListenError::NotASocket {
                path: path.to_owned(),
            })
        }
        Err(source) => return Err(perms_err(source)),
    }
    nix::sys::stat::fchmodat(
        None,
        path,
        nix::sys::stat::Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )
    .map_err(|e| perms_err(io::Error::from(e)))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(perms_err)?;
    }
    Ok(())
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), ListenError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| ListenError::Perms {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
#[path = "listen_tests.rs"]
mod tests;
