//! The crate's only unsafe code, each block with its SAFETY reason: forking the
//! privileged monitor while the process has a single thread, taking ownership of the file descriptors the kernel
//! installs when a message carries them (SCM_RIGHTS, also from a truncated control
//! buffer), asking a socket its domain and protocol, registering an owned
//! descriptor with the runtime, and tuning and trimming glibc's heap.
#![allow(unsafe_code)]

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::unistd::{ForkResult, Pid};
use tokio::io::unix::AsyncFd;

/// The most descriptors one message can carry (the kernel's `SCM_MAX_FD`).
const SCM_MAX_FD: usize = 253;

/// Which side of a fork this is.
#[derive(Debug)]
pub enum Forked {
    Child,
    Parent(Pid),
}

/// Forks, but only while the process has exactly one thread (as `/proc/self/task`
/// shows): the child of a multi-threaded process may only call async-signal-safe
/// functions, which the monitor does not limit itself to.
pub fn fork_single_threaded() -> io::Result<Forked> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(io::Error::other(format!(
            "{threads} threads are running: the monitor must be forked before any thread starts"
        )));
    }
    // SAFETY: the process has one thread (counted just above, and nothing between the
    // count and the fork starts one), so the child inherits no lock held by another
    // thread and may allocate, log and run ordinary code.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => Ok(Forked::Child),
        ForkResult::Parent { child } => Ok(Forked::Parent(child)),
    }
}

/// One record as `recvmsg` returned it: its length, its flags, and the descriptors it
/// carried, now owned (closed when dropped) and close-on-exec.
#[derive(Debug)]
pub struct Received {
    pub len: usize,
    pub flags: MsgFlags,
    pub fds: Vec<OwnedFd>,
}

/// Receives one record into `buf` with `MSG_CMSG_CLOEXEC`. With `want_fds`, there is
/// room for as many descriptors as one message can carry; without, the kernel closes
/// any the sender attached and sets `MSG_CTRUNC`. Under `MSG_CTRUNC` nix refuses to
/// walk the control buffer, so descriptors installed before the truncation are not
/// returned; the callers' protocol sends at most one per message, which never truncates
/// unless the receiver is out of descriptors (and then none was installed).
pub fn recv_record(sock: BorrowedFd<'_>, buf: &mut [u8], want_fds: bool) -> io::Result<Received> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = want_fds.then(|| nix::cmsg_space!([RawFd; SCM_MAX_FD]));
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        space.as_mut(),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: the kernel installed `fd` in this process's table for this
                    // message just now; nothing else refers to it, so it is ours to own.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
    }
    Ok(Received {
        len: msg.bytes,
        flags: msg.flags,
        fds,
    })
}

/// One message received by [`recv_fds`].
#[derive(Debug)]
pub struct Message {
    /// Data bytes read (0 with no descriptor: the end of the stream).
    pub len: usize,
    /// The kernel had more control data than there was room for (`MSG_CTRUNC`): it
    /// closed the descriptors that did not fit.
    pub truncated: bool,
    /// A control message other than `SCM_RIGHTS` arrived.
    pub foreign: bool,
    /// Every descriptor installed for this message, owned and close-on-exec.
    pub fds: Vec<OwnedFd>,
}

/// Receives one message into `buf` (without waiting) with room for `room` descriptors,
/// `MSG_CMSG_CLOEXEC`. Unlike [`recv_record`], descriptors installed before a
/// truncation are returned too (nix does not walk a truncated buffer), so the caller
/// closes them instead of leaking them.
pub fn recv_fds(sock: BorrowedFd<'_>, buf: &mut [u8], room: usize) -> io::Result<Message> {
    let want = room.clamp(1, SCM_MAX_FD) * std::mem::size_of::<RawFd>();
    // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes.
    let (space, exact) = unsafe {
        (
            libc::CMSG_SPACE(want as u32) as usize,
            libc::CMSG_LEN(want as u32) as usize,
        )
    };
    // u64 words: the control buffer must be aligned for `cmsghdr`.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty one; the pointers set below outlive
    // the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // Exactly `room` descriptors (CMSG_SPACE's padding would fit another one): more
    // truncate.
    msg.msg_controllen = exact as _;
    let flags = libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT;
    // SAFETY: `msg` points at `buf` and `control`, both valid for their stated lengths.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Message {
        len: n as usize,
        truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
        foreign: false,
        fds: Vec::new(),
    };
    let end = control.as_ptr() as usize + (msg.msg_controllen as usize).min(space);
    // SAFETY: the kernel wrote well-formed headers into the first `msg_controllen`
    // bytes (also when truncating: the last header then covers what was installed);
    // CMSG_FIRSTHDR/CMSG_NXTHDR stay within them, and each descriptor read is bounded by
    // both the header's length and the buffer's end. Each one was installed in this
    // process's table for this message just now, so it is ours to own.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let stop = (c as usize + h.cmsg_len as usize).min(end);
                let count = stop.saturating_sub(data as usize) / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    if fd >= 0 {
                        out.fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
            } else {
                out.foreign = true;
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(out)
}

/// An integer `SOL_SOCKET` option of a socket, e.g. `SO_DOMAIN` or `SO_PROTOCOL` (nix
/// has neither).
pub fn socket_int(fd: BorrowedFd<'_>, name: libc::c_int) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writing an int and its length.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// Registers `fd` with the runtime's reactor (read and write readiness). Needs the
/// runtime.
pub fn async_fd(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is open and refers to the same file description for as long as
    // it lives, always reporting the same raw descriptor; the `AsyncFd` owns it until
    // dropped, so it stays registered exactly while it is open.
    unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)
}

/// Large buffers (request bodies of megabytes) come from their own mappings and go back
/// to the kernel when freed: a fixed mmap threshold of 1 MiB. glibc's default threshold
/// is dynamic: the first such buffer freed raises it to its size, and from then on the
/// largest bodies stay in the heap after they are gone (BENCHMARKS.md, "Memory").
/// Called once at start, before the runtime's threads.
pub fn malloc_tune() {
    // SAFETY: mallopt only changes the allocator's parameters; a failure (returns 0)
    // leaves the defaults, which is harmless.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Gives the heap's free pages back to the kernel (after a busy spell, once the daemon
/// is idle: freed connection and stream buffers are scattered through the heap, and
/// glibc returns only its top on its own).
pub fn malloc_trim() {
    // SAFETY: malloc_trim takes the allocator's own locks; it may be called from any
    // thread at any time.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}
