//! How the daemon's heap goes back to the system after load.
//!
//! glibc's allocator keeps freed memory for reuse, in per-thread arenas and, once large blocks were freed,
//! for blocks of 128 KiB and more too (it raises the size at which it maps them on their own). Measured
//! with the memory bench (`cargo bench --bench memory`), after the c64 read mix and 50 clones with every
//! handle closed: RSS stayed at 66 MiB. Trimming the arenas after reads brings it to 30 MiB within 11 s.
//! Fixing the map threshold at 128 KiB as well lowered the peak from 120 to 110 MiB and the rest to 28 MiB,
//! but cost 15–18 % of calls/s at c16 (every large buffer mapped and unmapped per call), so it is not set.

/// Returns the free pages of every arena to the system. Called by the handle sweeper once reads have
/// stopped (a trim takes the arenas' locks, which calls in flight would wait for). Measured: mimalloc
/// instead of glibc's allocator started at 33 MiB idle, peaked higher under the same load (140–152 MiB)
/// and gave nothing back within 30 s, so glibc stays.
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arenas' own locks; safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
