//! The daemon's side of the monitor's socket: one request at a time, each reply awaited
//! for at most [`ANSWER_WAIT`] (a late reply is recognised by its id and dropped), and a
//! watch that notices when the monitor is gone.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::MsgFlags;
use nix::unistd::Pid;
use thiserror::Error;
use tokio::io::unix::AsyncFd;

use super::wire::{self, Reply, Request, MAX_REPLY};
use crate::os::fdpass::{self, Assembler};

/// The longest wait for one reply (reading a file and binding a socket take far less).
pub const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Why the monitor did not do what was asked.
#[derive(Debug, Error)]
pub enum MonitorError {
    #[error("the privileged monitor (pid {pid}) is gone: {source}")]
    Gone { pid: Pid, source: io::Error },
    #[error("the privileged monitor (pid {pid}) did not answer within {}s", ANSWER_WAIT.as_secs())]
    Silent { pid: Pid },
    #[error("the privileged monitor (pid {pid}) answered out of protocol: {what}")]
    Protocol { pid: Pid, what: String },
    /// The configuration file could not be read.
    #[error("{0}")]
    Unreadable(String),
    /// The configuration file is not valid (one line per error).
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The monitor tried and failed (its error).
    #[error("{0}")]
    Failed(String),
}

/// The daemon's end of the socket.
#[derive(Debug)]
pub struct Client {
    sock: AsyncFd<OwnedFd>,
    pid: Pid,
    next: u64,
}

impl Client {
    /// Takes the daemon's end (made non-blocking) into the runtime.
    pub(super) fn new(pid: Pid, sock: OwnedFd) -> io::Result<Client> {
        let flags = OFlag::from_bits_truncate(fcntl(sock.as_raw_fd(), FcntlArg::F_GETFL)?);
        fcntl(
            sock.as_raw_fd(),
            FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK),
        )?;
        Ok(Client {
            sock: crate::os::sys::async_fd(sock)?,
            pid,
            next: 0,
        })
    }

    /// The monitor's process id.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The configuration file's text, read and validated by the monitor.
    pub async fn read_config(&mut self) -> Result<String, MonitorError> {
        match self.call(Request::Read).await? {
            (Reply::Config { text }, _) => Ok(text),
            (Reply::Unreadable { error }, _) => Err(MonitorError::Unreadable(error)),
            (Reply::Invalid { errors }, _) => Err(MonitorError::Invalid(errors)),
            (other, _) => Err(self.unexpected(other)),
        }
    }

    /// A listening socket for `sandbox` of the configuration last read.
    pub async fn bind(&mut self, sandbox: &str) -> Result<OwnedFd, MonitorError> {
        let req = Request::Bind {
            sandbox: sandbox.to_owned(),
        };
        match self.call(req).await? {
            (Reply::Done, fds) if fds.len() == 1 => Ok(fds.into_iter().next().expect("one")),
            (Reply::Done, fds) => Err(MonitorError::Protocol {
                pid: self.pid,
                what: format!("{} descriptors with a listener", fds.len()),
            }),
            (Reply::Failed { error }, _) => Err(MonitorError::Failed(error)),
            (other, _) => Err(self.unexpected(other)),
        }
    }

    /// Sets `sandbox`'s socket mode and owner as the configuration last read says.
    pub async fn perms(&mut self, sandbox: &str) -> Result<(), MonitorError> {
        let req = Request::Perms {
            sandbox: sandbox.to_owned(),
        };
        self.done(req).await
    }

    /// Removes a removed sandbox's socket, if nobody listens on it.
    pub async fn unlink(&mut self, path: &Path) -> Result<(), MonitorError> {
        let req = Request::Unlink {
            path: path.to_owned(),
        };
        self.done(req).await
    }

    /// Resolves once the monitor is gone (its end closed), or has spoken unasked. Call
    /// only between requests.
    pub async fn gone(&self) -> MonitorError {
        loop {
            let mut guard = match self.sock.readable().await {
                Ok(g) => g,
                Err(source) => {
                    return MonitorError::Gone {
                        pid: self.pid,
                        source,
                    }
                }
            };
            let mut b = [0u8; 1];
            let peek = guard.try_io(|s| {
                let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
                Ok(nix::sys::socket::recv(s.as_raw_fd(), &mut b, flags)?)
            });
            match peek {
                Ok(Ok(0)) => {
                    return MonitorError::Gone {
                        pid: self.pid,
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "it closed its socket (exited or was killed)",
                        ),
                    }
                }
                Ok(Ok(_)) => {
                    return MonitorError::Protocol {
                        pid: self.pid,
                        what: "a message nobody asked for".into(),
                    }
                }
                Ok(Err(source)) => {
                    return MonitorError::Gone {
                        pid: self.pid,
                        source,
                    }
                }
                Err(_would_block) => continue,
            }
        }
    }

    async fn done(&mut self, req: Request) -> Result<(), MonitorError> {
        match self.call(req).await? {
            (Reply::Done, _) => Ok(()),
            (Reply::Failed { error }, _) => Err(MonitorError::Failed(error)),
            (other, _) => Err(self.unexpected(other)),
        }
    }

    fn unexpected(&self, reply: Reply) -> MonitorError {
        MonitorError::Protocol {
            pid: self.pid,
            what: format!("{reply:?}"),
        }
    }

    /// Sends `req` and waits for its reply (replies to earlier requests that timed out
    /// are dropped, their descriptors closed).
    async fn call(&mut self, req: Request) -> Result<(Reply, Vec<OwnedFd>), MonitorError> {
        self.next += 1;
        let id = self.next;
        let pid = self.pid;
        let gone = |source: io::Error| MonitorError::Gone { pid, source };
        let bytes = wire::encode(id, req).map_err(|e| gone(e.into()))?;
        if bytes.len() > fdpass::RECORD {
            return Err(MonitorError::Protocol {
                pid,
                what: format!("a request of {} bytes", bytes.len()),
            });
        }
        loop {
            let mut guard = self.sock.writable().await.map_err(gone)?;
            match guard.try_io(|s| fdpass::send(s.get_ref().as_fd(), &bytes, &[])) {
                Ok(r) => break r.map_err(gone)?,
                Err(_would_block) => continue,
            }
        }
        let answer = async {
            loop {
                let (msg, fds) = self.recv().await.map_err(gone)?;
                let reply = wire::decode::<Reply>(&msg).map_err(|e| MonitorError::Protocol {
                    pid,
                    what: e.to_string(),
                })?;
                if reply.id == id {
                    return Ok((reply.body, fds));
                }
                tracing::debug!(
                    id = reply.id,
                    "dropped a late reply of the privileged monitor"
                );
            }
        };
        tokio::time::timeout(ANSWER_WAIT, answer)
            .await
            .map_err(|_| MonitorError::Silent { pid })?
    }

    async fn recv(&self) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
        let mut a = Assembler::new(MAX_REPLY, true);
        loop {
            let mut guard = self.sock.readable().await?;
            match guard.try_io(|s| a.recv_record(s.get_ref().as_fd())) {
                Ok(Ok(true)) => return Ok(a.finish()),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }
}
