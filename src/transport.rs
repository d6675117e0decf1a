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
