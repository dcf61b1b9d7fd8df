//! Messages with file descriptors between the daemon and its privileged monitor: a unix
//! `SOCK_SEQPACKET` socketpair, so each record arrives whole and a closed end reads as
//! a record of length 0. A message is one or more records of at most [`RECORD`] bytes,
//! each led by one byte (`+` more follows, `.` last); descriptors travel with the last
//! (SCM_RIGHTS), and arrive close-on-exec (`MSG_CMSG_CLOEXEC`). Descriptors lost in
//! transit (`MSG_CTRUNC`) make the message an error, never a silent success.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};

use super::sys;

/// Payload bytes per record (well under the default socket buffer, so a record of a
/// blocking sender always fits).
pub const RECORD: usize = 32 * 1024;
const MORE: u8 = b'+';
const LAST: u8 = b'.';

/// A connected `SOCK_SEQPACKET` pair, both ends close-on-exec.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// Sends `msg` (and `fds`, with its last record). On a non-blocking socket a message
/// must fit one record, so that `WouldBlock` means nothing was sent.
pub fn send(sock: BorrowedFd<'_>, msg: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let mut chunks: Vec<&[u8]> = msg.chunks(RECORD).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let n = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let last = i + 1 == n;
        let head = [if last { LAST } else { MORE }];
        let iov = [IoSlice::new(&head), IoSlice::new(chunk)];
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if last && !raw.is_empty() {
            &rights
        } else {
            &[]
        };
        loop {
            match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Gathers the records of one message, with every descriptor they carried (owned from
/// the moment they arrive, so an error closes them).
#[derive(Debug)]
pub struct Assembler {
    data: Vec<u8>,
    fds: Vec<OwnedFd>,
    buf: Vec<u8>,
    limit: usize,
    want_fds: bool,
}

impl Assembler {
    /// A message of at most `limit` bytes; `want_fds`: accept descriptors (without, the
    /// kernel closes any the sender attached, and the message is an error).
    pub fn new(limit: usize, want_fds: bool) -> Assembler {
        Assembler {
            data: Vec::new(),
            fds: Vec::new(),
            buf: vec![0; RECORD + 1],
            limit,
            want_fds,
        }
    }

    /// Receives one record: `Ok(true)` once the message is complete. The other end having
    /// closed is `UnexpectedEof`; `WouldBlock` (non-blocking socket) passes through.
    pub fn recv_record(&mut self, sock: BorrowedFd<'_>) -> io::Result<bool> {
        let r = loop {
            match sys::recv_record(sock, &mut self.buf, self.want_fds) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        self.fds.extend(r.fds);
        if r.flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(io::Error::other(if self.want_fds {
                "file descriptors were lost in transit (MSG_CTRUNC): the receiver is out of descriptors (raise LimitNOFILE / ulimit -n)"
            } else {
                "the message carried file descriptors, which this end never accepts"
            }));
        }
        if r.len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the other end closed the socket",
            ));
        }
        if r.flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a record over {RECORD} bytes"),
            ));
        }
        let body = &self.buf[1..r.len];
        if self.data.len() + body.len() > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a message over {} bytes", self.limit),
            ));
        }
        self.data.extend_from_slice(body);
        match self.buf[0] {
            LAST => Ok(true),
            MORE => Ok(false),
            b => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a record led by {b:#04x}"),
            )),
        }
    }

    /// The message and its descriptors.
    pub fn finish(self) -> (Vec<u8>, Vec<OwnedFd>) {
        (self.data, self.fds)
    }
}

/// Receives one whole message on a blocking socket.
pub fn recv(
    sock: BorrowedFd<'_>,
    limit: usize,
    want_fds: bool,
) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut a = Assembler::new(limit, want_fds);
    while !a.recv_record(sock)? {}
    Ok(a.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsFd;

    fn file_with(text: &str) -> std::fs::File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn read_back(fd: OwnedFd) -> String {
        let mut f = std::fs::File::from(fd);
        f.rewind().unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn a_long_message_and_its_descriptor_arrive_whole() {
        let (a, b) = pair().unwrap();
        let msg: Vec<u8> = (0..RECORD * 3 + 17).map(|i| (i % 251) as u8).collect();
        let f = file_with("passed");
        let sender = {
            let msg = msg.clone();
            std::thread::spawn(move || send(a.as_fd(), &msg, &[f.as_fd()]).unwrap())
        };
        let (got, fds) = recv(b.as_fd(), 1 << 20, true).unwrap();
        sender.join().unwrap();
        assert_eq!(got, msg);
        assert_eq!(fds.len(), 1);
        let flags = nix::fcntl::fcntl(fds[0].as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & nix::libc::FD_CLOEXEC, 0, "close-on-exec");
        assert_eq!(read_back(fds.into_iter().next().unwrap()), "passed");
        // An empty message is one record, not an end of file.
        let (a, b) = pair().unwrap();
        send(a.as_fd(), b"", &[]).unwrap();
        assert_eq!(recv(b.as_fd(), 10, false).unwrap().0, b"");
    }

    #[test]
    fn a_closed_end_limits_and_unwanted_descriptors_are_errors() {
        let (a, b) = pair().unwrap();
        drop(a);
        let e = recv(b.as_fd(), 10, true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);

        let (a, b) = pair().unwrap();
        send(a.as_fd(), &[7; 100], &[]).unwrap();
        let e = recv(b.as_fd(), 10, true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");

        // A receiver that accepts no descriptors gets none (the kernel closes them) and
        // an error: MSG_CTRUNC is never ignored.
        let (a, b) = pair().unwrap();
        let f = file_with("x");
        send(a.as_fd(), b"hi", &[f.as_fd()]).unwrap();
        let e = recv(b.as_fd(), 10, false).unwrap_err();
        assert!(e.to_string().contains("never accepts"), "{e}");
    }

    #[test]
    fn a_record_that_is_not_ours_is_refused() {
        let (a, b) = pair().unwrap();
        nix::sys::socket::send(a.as_raw_fd(), b"?x", MsgFlags::empty()).unwrap();
        let e = recv(b.as_fd(), 10, true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }
}
