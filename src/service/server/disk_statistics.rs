//! DiskStatistics: free and used bytes per storage, from statfs. A storage that cannot be read reports
//! zeros rather than failing the whole call, as upstream does.

use crate::proto::gitaly::{disk_statistics_response::StorageStatus, DiskStatisticsResponse};
use crate::service::Context;

pub fn disk_statistics(ctx: &Context) -> DiskStatisticsResponse {
    let storage_statuses = ctx
        .locator
        .storages()
        .map(|(name, path)| {
            let mut status = StorageStatus { storage_name: name.to_string(), ..Default::default() };
            match nix::sys::statvfs::statvfs(path) {
                Ok(st) => {
                    let bsize = st.fragment_size() as i64;
                    status.available = st.blocks_available() as i64 * bsize;
                    status.used = (st.blocks() as i64 - st.blocks_free() as i64) * bsize;
                }
                Err(e) => tracing::warn!(storage = name, error = %e, "disk statistics"),
            }
            status
        })
        .collect();
    DiskStatisticsResponse { storage_statuses }
}
