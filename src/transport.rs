//! HTTP/2 and gRPC sizes shared by the daemon's listeners, its clients (CLI, rgitaly-ssh, the worker pool)
//! and the layers that read request bodies. They live apart from the server's assembly so that lower
//! modules never import it.

/// Largest gRPC message accepted or sent; upstream uses gRPC's 4 MiB default for receiving.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// HTTP/2 flow-control and frame sizes for bulk transfer: with the defaults (64 KiB windows, 16 KiB
/// frames) a pack moves in many small round trips. Memory stays bounded by these windows per stream.
pub const STREAM_WINDOW: u32 = 4 << 20;
pub const CONNECTION_WINDOW: u32 = 8 << 20;
pub const MAX_FRAME: u32 = 1 << 20;

/// Socket buffer size asked for on Unix-socket connections (the kernel caps it at `net.core.wmem_max` /
/// `rmem_max`).
pub const SOCKET_BUFFER: usize = 1 << 20;

/// Asks for larger send and receive buffers: with the default (~208 KiB) a 1 MiB frame leaves in several
/// writes, each a wakeup on both sides.
pub fn grow_socket_buffers(s: &impl std::os::fd::AsRawFd) {
    let size = SOCKET_BUFFER as libc::c_int;
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // Best effort: a smaller buffer only costs wakeups.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}
