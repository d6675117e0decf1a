//! The daily maintenance window (`[daily_maintenance]`), as upstream runs it: once a day at the
//! configured local time, for at most the configured duration, OptimizeRepository over every repository
//! of the configured storages, storages and repositories in random order (so a window too short for a
//! large storage still reaches every repository over the days), one repository at a time, at most one
//! per second. A storage path shared by two storage names is walked once. The window ends at its deadline
//! or when the daemon stops; the repository being optimized then is left as OptimizeRepository leaves an
//! interrupted run (its git processes are stopped; nothing half-written is kept).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::DailyMaintenance;
use crate::context::Ctx;
use crate::proto::gitaly::{OptimizeRepositoryRequest, Repository};

/// Upstream's pace: one repository per second at most.
const PACE: Duration = Duration::from_secs(1);

/// For tests: the first window starts this many seconds after boot instead of at the configured time.
const START_IN_ENV: &str = "RGITALY_DAILY_MAINTENANCE_START_IN";

/// Runs the window every day, forever (the daemon aborts it when it stops).
pub async fn run_daily(ctx: Ctx) {
    let schedule = ctx.config.daily_maintenance();
    let duration = schedule.duration.map(|d| d.0).unwrap_or_default();
    if schedule.disabled || duration.is_zero() || schedule.storages.is_empty() {
        tracing::info!("maintenance: daily maintenance disabled");
        return;
    }
    let mut first = std::env::var(START_IN_ENV).ok().and_then(|s| s.parse::<u64>().ok()).map(Duration::from_secs);
    loop {
        let wait = first.take().unwrap_or_else(|| until_next(schedule.start_hour, schedule.start_minute));
        tracing::info!(scheduled_in_seconds = wait.as_secs(), "maintenance: daily scheduled");
        tokio::time::sleep(wait).await;
        tracing::info!(max_duration = ?duration, "maintenance: daily starting");
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(duration, optimize_storages(&ctx, &schedule)).await;
        tracing::info!(
            max_duration = ?duration,
            actual_duration = ?started.elapsed(),
            ended_by_deadline = outcome.is_err(),
            "maintenance: daily completed"
        );
        // Never twice in the same minute, however short the window.
        tokio::time::sleep(Duration::from_secs(61).saturating_sub(started.elapsed())).await;
    }
}

async fn optimize_storages(ctx: &Ctx, schedule: &DailyMaintenance) {
    let mut rng = Rng::seeded();
    let mut storages: Vec<(String, PathBuf)> = ctx
        .locator
        .storages()
        .filter(|(name, _)| schedule.storages.iter().any(|s| s == name))
        .map(|(n, p)| (n.to_string(), p.to_path_buf()))
        .collect();
    rng.shuffle(&mut storages);
    let mut visited: Vec<PathBuf> = Vec::new();
    let mut next_at = tokio::time::Instant::now();
    for (name, root) in storages {
        if visited.contains(&root) {
            continue;
        }
        visited.push(root.clone());
        tracing::info!(storage_path = %root.display(), "maintenance: optimizing repos in storage");
        // Depth first, each directory's entries shuffled; a repository's own directories are not entered.
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let mut entries = list_dirs(&dir).await;
            rng.shuffle(&mut entries);
            for path in entries {
                if path.parent() == Some(root.as_path()) && path.file_name().is_some_and(|n| n == "+gitaly") {
                    continue;
                }
                if !crate::locator::is_git_directory(&path) {
                    stack.push(path);
                    continue;
                }
                tokio::time::sleep_until(next_at).await;
                next_at = tokio::time::Instant::now() + PACE;
                optimize_one(ctx, &name, &root, &path).await;
            }
        }
    }
}

async fn optimize_one(ctx: &Ctx, storage: &str, root: &Path, path: &Path) {
    let Ok(relative) = path.strip_prefix(root) else { return };
    let relative_path = relative.to_string_lossy().into_owned();
    let req = OptimizeRepositoryRequest {
        repository: Some(Repository {
            storage_name: storage.to_string(),
            relative_path: relative_path.clone(),
            ..Default::default()
        }),
    };
    let started = std::time::Instant::now();
    if let Err(e) = crate::service::repository::optimize_repository(ctx, req).await {
        tracing::error!(storage = %storage, relative_path = %relative_path, error = %e.message(),
            "maintenance: repo optimization failure");
    }
    crate::metrics::DAILY_MAINTENANCE_SECONDS.observe(started.elapsed().as_secs_f64());
}

/// The directories in `dir` (not following symbolic links), off the async threads.
async fn list_dirs(dir: &Path) -> Vec<PathBuf> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let Ok(rd) = std::fs::read_dir(&dir) else { return Vec::new() };
        rd.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect()
    })
    .await
    .unwrap_or_default()
}

/// How long until the next `hour:minute` local time (tomorrow's when today's has passed).
fn until_next(hour: u32, minute: u32) -> Duration {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let next = next_local(now as i64, hour, minute);
    Duration::from_secs(next.saturating_sub(now as i64).max(0) as u64)
}

/// The first `hour:minute:00` local time strictly after `now` (Unix seconds).
fn next_local(now: i64, hour: u32, minute: u32) -> i64 {
    // SAFETY: localtime_r and mktime only read and write the structs given; tzset is implied.
    unsafe {
        let t: libc::time_t = now as libc::time_t;
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return now + 86_400;
        }
        tm.tm_hour = hour as i32;
        tm.tm_min = minute as i32;
        tm.tm_sec = 0;
        tm.tm_isdst = -1;
        let mut at = libc::mktime(&mut tm) as i64;
        if at <= now {
            tm.tm_mday += 1;
            tm.tm_hour = hour as i32;
            tm.tm_min = minute as i32;
            tm.tm_isdst = -1;
            at = libc::mktime(&mut tm) as i64;
        }
        at
    }
}

/// A small xorshift generator for the walk order (nothing secret depends on it).
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        Rng((uuid::Uuid::new_v4().as_u128() as u64) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_window_is_later_today_or_tomorrow() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        for (h, m) in [(0, 0), (12, 0), (23, 59)] {
            let next = next_local(now, h, m);
            assert!(next > now && next <= now + 86_400 + 3600, "{h}:{m}");
            assert_eq!(next_local(next - 1, h, m), next);
            let again = next_local(next, h, m);
            assert!(again - next >= 23 * 3600 && again - next <= 25 * 3600);
        }
    }

    #[test]
    fn shuffles_keep_every_item() {
        let mut v: Vec<u32> = (0..50).collect();
        Rng::seeded().shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }
}
