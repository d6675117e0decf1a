//! Pool settings: upstream's `[gitaly-ruby]` knobs, overridden key by key by our `[workers]` section.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, GitalyRuby};

pub const MIN_WORKERS: u32 = 2;

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub num_workers: u32,
    pub max_rss: u64,
    pub graceful_restart_timeout: Duration,
    pub restart_delay: Duration,
    pub memory_check_interval: Duration,
    pub health_check_interval: Duration,
    pub health_failure_timeout: Duration,
    pub crash_threshold: u32,
    pub crash_wait_time: Duration,
    /// The `rgitaly-worker` binary.
    pub worker_bin: PathBuf,
    /// Private directory (0700) holding one socket per worker.
    pub socket_dir: PathBuf,
    /// The daemon's config file, which workers read for git settings.
    pub config_path: PathBuf,
}

impl PoolConfig {
    /// Reads the pool settings; returns warnings for values that were adjusted.
    pub fn from_config(cfg: &Config, config_path: PathBuf) -> (PoolConfig, Vec<String>) {
        let (w, r): (&GitalyRuby, &GitalyRuby) = (&cfg.workers, &cfg.gitaly_ruby);
        let mut warnings = Vec::new();
        macro_rules! pick {
            ($field:ident, $default:expr) => {
                w.$field.or(r.$field).unwrap_or($default)
            };
        }
        macro_rules! dur {
            ($field:ident, $default:expr) => {
                w.$field.or(r.$field).map(|d| d.0).unwrap_or($default)
            };
        }
        let mut num_workers = pick!(num_workers, MIN_WORKERS);
        if num_workers < MIN_WORKERS {
            warnings.push(format!("workers.num_workers: {num_workers} raised to the minimum of {MIN_WORKERS}"));
            num_workers = MIN_WORKERS;
        }
        let worker_bin = find_binary(cfg.bin_dir.as_deref(), "rgitaly-worker");
        // Per daemon process, so a successor started for an upgrade never touches its predecessor's sockets.
        let socket_dir = cfg.internal_dir().join(format!("workers.{}", std::process::id()));
        let pool = PoolConfig {
            num_workers,
            max_rss: pick!(max_rss, 200 * 1024 * 1024),
            graceful_restart_timeout: dur!(graceful_restart_timeout, Duration::from_secs(600)),
            restart_delay: dur!(restart_delay, Duration::from_secs(300)),
            memory_check_interval: dur!(memory_check_interval, Duration::from_secs(15)),
            health_check_interval: dur!(health_check_interval, Duration::from_secs(15)),
            health_failure_timeout: dur!(health_failure_timeout, Duration::from_secs(60)),
            crash_threshold: pick!(crash_threshold, 5),
            crash_wait_time: dur!(crash_wait_time, Duration::from_secs(60)),
            worker_bin,
            socket_dir,
            config_path,
        };
        (pool, warnings)
    }
}

/// `bin_dir/NAME` when it exists, else the one beside the running daemon (`rgitaly-worker`,
/// `rgitaly-hooks`).
pub fn find_binary(bin_dir: Option<&std::path::Path>, name: &str) -> PathBuf {
    if let Some(p) = bin_dir.map(|d| d.join(name)).filter(|p| p.is_file()) {
        return p;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_section_wins_and_minimum_is_enforced() {
        let (cfg, _) = Config::parse(
            "[gitaly-ruby]\nnum_workers = 1\nmax_rss = 1000\nrestart_delay = \"1m\"\n[workers]\nmax_rss = 2000\nhealth_check_interval = \"2s\"\n",
        )
        .unwrap();
        let (p, warnings) = PoolConfig::from_config(&cfg, PathBuf::from("c.toml"));
        assert_eq!(p.num_workers, 2);
        assert_eq!(warnings.len(), 1);
        assert_eq!(p.max_rss, 2000);
        assert_eq!(p.restart_delay, Duration::from_secs(60));
        assert_eq!(p.health_check_interval, Duration::from_secs(2));
        assert_eq!(p.graceful_restart_timeout, Duration::from_secs(600));
        assert_eq!(p.crash_threshold, 5);
    }
}
