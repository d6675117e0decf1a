//! How the daemon's heap goes back to the system after load.
//!
//! glibc's allocator keeps freed memory for reuse: in per-thread arenas, and, once a large block was
//! freed, it raises the size at which it maps blocks of their own, so later 128 KiB–1 MiB buffers (pack
//! chunks, blob pieces, delta caches) come from the arenas and stay there. Measured with the memory bench
//! (`cargo bench --bench memory`): after the c64 read mix and 50 clones, with every handle closed, RSS
//! stayed at 66 MiB; with the map threshold fixed at 128 KiB it fell to 46 MiB; trimming the arenas after
//! reads brings it back near idle. Both are set here, for glibc only.

/// Blocks this large or larger are mapped on their own and unmapped when freed.
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Fixes the allocator's map threshold (which also stops glibc from raising it). Call once at start.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before the runtime's threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Returns the free pages of every arena to the system.
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arenas' own locks; safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
