//! The send queue's writes to the client's connection: non-blocking, vectored, and
//! straight to the descriptor from the fan-out; and what the kernel says of the peer's
//! acknowledgements.

use bytes::Bytes;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::time::Duration;
use tokio::net::TcpStream;

/// Frames one vectored write takes at most.
pub(super) const FRAMES_PER_WRITE: usize = 64;

/// A descriptor kept as `fd + 1`, so that an `Option` of it takes four bytes (the queue's
/// state then fits one allocation class smaller).
#[derive(Clone, Copy)]
pub(super) struct Descriptor(std::num::NonZeroU32);

impl Descriptor {
    pub(super) fn new(fd: RawFd) -> Option<Self> {
        let fd = u32::try_from(fd).ok()?;
        std::num::NonZeroU32::new(fd.checked_add(1)?).map(Self)
    }

    pub(super) fn get(self) -> RawFd {
        (self.0.get() - 1) as RawFd
    }
}

/// The bytes a non-blocking write took: 0 when the socket would block.
pub(super) fn write_some(result: io::Result<usize>) -> io::Result<usize> {
    match result {
        Ok(0) => Err(io::ErrorKind::WriteZero.into()),
        Ok(n) => Ok(n),
        // Interrupted: nothing was written; the flusher writes it.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

/// One non-blocking write of `frames` (at most [`FRAMES_PER_WRITE`]).
pub(super) fn write_now(socket: &TcpStream, frames: &[Bytes]) -> io::Result<usize> {
    if let [frame] = frames {
        return socket.try_write(frame);
    }
    let mut slices = [IoSlice::new(&[]); FRAMES_PER_WRITE];
    for (slot, frame) in slices.iter_mut().zip(frames) {
        *slot = IoSlice::new(frame);
    }
    socket.try_write_vectored(&slices[..frames.len()])
}

/// One write of `frames` straight to the descriptor: what [`write_now`] does, without
/// reading the stream's registration (two more cache lines per socket, the fan-out's
/// largest cost after the kernel's). Its readiness is not updated: a `WouldBlock` here
/// queues the frames and starts the flusher, whose own write through the stream finds the
/// socket blocked and waits for it.
pub(super) fn write_direct(fd: RawFd, frames: &[Bytes]) -> io::Result<usize> {
    let written = if let [frame] = frames {
        // SAFETY: `fd` is the open descriptor of the stream held in the same `WriteState`
        // (kept open by it while the state's lock is held); the buffer is `frame`.
        unsafe { libc::send(fd, frame.as_ptr().cast(), frame.len(), libc::MSG_NOSIGNAL) }
    } else {
        let mut slices = [IoSlice::new(&[]); FRAMES_PER_WRITE];
        for (slot, frame) in slices.iter_mut().zip(frames) {
            *slot = IoSlice::new(frame);
        }
        let count = frames.len().min(FRAMES_PER_WRITE);
        // SAFETY: an all-zero `msghdr` is valid (no address, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // `IoSlice` is ABI-compatible with `iovec` on unix.
        msg.msg_iov = slices.as_mut_ptr().cast();
        msg.msg_iovlen = count as _;
        // SAFETY: as above; `msg` points at `count` initialized slices that outlive the
        // call.
        unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) }
    };
    if written < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(written as usize)
    }
}

/// How long ago the connection last received an acknowledgement (`TCP_INFO`'s
/// `tcpi_last_ack_recv`).
#[cfg(target_os = "linux")]
pub(super) fn since_last_ack(stream: &TcpStream) -> Option<Duration> {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero `tcp_info` is valid (plain integers).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the descriptor belongs to `stream`, which is alive; `info` and `len`
    // describe a writable buffer of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then(|| Duration::from_millis(info.tcpi_last_ack_recv.into()))
}

#[cfg(not(target_os = "linux"))]
pub(super) fn since_last_ack(_: &TcpStream) -> Option<Duration> {
    None
}

/// Asks the CPU to start loading the cache line at `at` (a hint: nothing is read or
/// written that the program sees, and any address is allowed).
pub(crate) fn prefetch<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch neither reads nor writes memory the program sees and takes any
    // address; SSE, which has it, is part of every x86_64 CPU.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(at.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}
