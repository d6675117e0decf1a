//! How the daemon's heap goes back to the system after load.
//!
//! glibc's allocator keeps freed memory for reuse, in per-thread arenas and, once large blocks were freed,
//! for blocks of 128 KiB and more too (it raises the size at which it maps them on their own, up to 32 MiB).
//! Measured with the memory bench (`cargo bench --bench memory`), after the c64 read mix and 50 clones with
//! every handle closed: RSS stayed at 66 MiB. Trimming the arenas after reads brings it to 30 MiB within 11 s.
//!
//! The peak is the other half. With glibc's moving map threshold the mix peaked at 102–125 MiB: buffers of a
//! few hundred KiB (clone output, big-blob pieces, HTTP/2 frames) freed once raise the threshold, and from
//! then on land in the arenas, where 64 callers' worth of them stay. [`tune`] fixes the threshold at
//! 128 KiB (they are mapped and unmapped on their own) and raises the trim threshold to 32 MiB, so freeing
//! one no longer trims the heap top at every call; the sweeper's [`release`] still trims after the load.
//! Measured: peak 84–88 MiB instead of 111 MiB on the same run; calls/s at c16 unchanged within the
//! machine's noise. The threshold alone, without the trim threshold, cost 10–18 % of calls/s at c16.

/// Fixes glibc's map and trim thresholds (see the module docs). An operator's `MALLOC_MMAP_THRESHOLD_` or
/// `MALLOC_TRIM_THRESHOLD_` in the environment wins. Call once, before the runtime starts threads.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: mallopt only sets allocator parameters; called before other threads exist.
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10) };
        }
        if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20) };
        }
    }
}

/// Returns the free pages of every arena to the system. Called by the handle sweeper once reads have
/// stopped (a trim takes the arenas' locks, which calls in flight would wait for). Measured: mimalloc
/// instead of glibc's allocator started at 33 MiB idle, peaked higher under the same load (140–152 MiB)
/// and gave nothing back within 30 s; jemalloc (tikv-jemallocator 0.7) peaked at 130–138 MiB where glibc
/// peaked at 86–125 MiB, and with its defaults stayed at 34 MiB after the load (24 MiB with background
/// purging, for four more threads). So glibc stays.
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arenas' own locks; safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
