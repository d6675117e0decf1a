//! The daemon's configuration: an upstream Gitaly `config.toml`, read as-is.
//!
//! Operators migrate by pointing rgitaly at the file they already have, so every upstream key parses, keys
//! whose feature is not built yet only warn, and unknown keys (Ruby-only leftovers, typos) are reported but
//! never fatal. Validation follows upstream: listeners, storages, paths. Every error names the file and the
//! key, because a config error is read by a person at boot.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub socket_path: Option<PathBuf>,
    pub listen_addr: Option<String>,
    pub tls_listen_addr: Option<String>,
    pub prometheus_listen_addr: Option<String>,
    pub bin_dir: Option<PathBuf>,
    pub internal_socket_dir: Option<PathBuf>,
    pub runtime_dir: Option<PathBuf>,
    pub graceful_restart_timeout: Option<GoDuration>,
    pub auth: Auth,
    pub tls: Tls,
    pub storage: Vec<Storage>,
    pub logging: Logging,
    pub git: Git,
    #[serde(rename = "gitaly-ruby")]
    pub gitaly_ruby: GitalyRuby,
    #[serde(rename = "gitlab-shell")]
    pub gitlab_shell: toml::Table,
    pub gitlab: Gitlab,
    pub hooks: Hooks,
    pub concurrency: Vec<Concurrency>,
    pub prometheus: Prometheus,
    pub pack_objects_cache: toml::Table,
    pub timeout: Timeout,
    pub daily_maintenance: Option<DailyMaintenance>,
    pub cgroups: toml::Table,
    pub workers: GitalyRuby,
    pub connections: Connections,
    pub read_cache: ReadCache,
}

/// `[daily_maintenance]`: when OptimizeRepository runs over the storages' repositories, as upstream. A
/// config without the section gets upstream's default window (12:00 local time, 10 minutes, every
/// storage); `disabled = true`, a zero duration or no storages turn it off.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct DailyMaintenance {
    pub start_hour: u32,
    pub start_minute: u32,
    pub duration: Option<GoDuration>,
    pub storages: Vec<String>,
    pub disabled: bool,
}

impl Config {
    /// The maintenance window in effect: the section, or upstream's default when it is absent.
    pub fn daily_maintenance(&self) -> DailyMaintenance {
        self.daily_maintenance.clone().unwrap_or_else(|| DailyMaintenance {
            start_hour: 12,
            start_minute: 0,
            duration: Some(GoDuration(Duration::from_secs(600))),
            storages: self.storage.iter().map(|s| s.name.clone()).collect(),
            disabled: false,
        })
    }
}

/// `[gitlab]`: where GitLab's internal API is, for the hook chain.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Gitlab {
    /// `http://`, `https://` or `http+unix://` (a socket path, percent-encoded or not).
    pub url: Option<String>,
    /// The path GitLab is served under; used with `http+unix://` only, as upstream.
    pub relative_url_root: Option<String>,
    /// The shared secret; default `<gitlab-shell.dir>/.gitlab_shell_secret`.
    pub secret_file: Option<PathBuf>,
    #[serde(rename = "http-settings")]
    pub http_settings: HttpSettings,
}

/// `[gitlab.http-settings]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// Seconds a call may take; 0 or unset means 300.
    pub read_timeout: Option<u64>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub ca_path: Option<PathBuf>,
    pub self_signed_cert: Option<bool>,
}

/// `[hooks]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Hooks {
    /// Global custom hooks (`<dir>/<hook>.d/*`); default `<gitlab-shell.dir>/hooks`.
    pub custom_hooks_dir: Option<PathBuf>,
}

/// rgitaly's own: the budget for in-process object reads (upstream runs `git cat-file` processes, bounded
/// by `[git] catfile_cache_size`, whose count is also the bound on idle repository handles here).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ReadCache {
    /// Threads that run object reads. Default: one per core, at least 2.
    pub threads: Option<usize>,
    /// Bytes the object and delta-base caches of all open repository handles may hold together.
    /// Default 64 MiB.
    pub max_bytes: Option<u64>,
    /// Caches of one handle, taken from `max_bytes` while it is open. Default 8 MiB.
    pub handle_bytes: Option<u64>,
    /// An unused handle, and a repository with none, is closed after this long (its caches freed, its
    /// packs unmapped). Default "10s", the time upstream keeps an unused `git cat-file` process.
    pub idle_timeout: Option<GoDuration>,
}

impl ReadCache {
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or(0)
    }
    pub fn max_bytes(&self) -> usize {
        self.max_bytes.unwrap_or(64 << 20) as usize
    }
    pub fn handle_bytes(&self) -> usize {
        (self.handle_bytes.unwrap_or(8 << 20) as usize).min(self.max_bytes())
    }
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(10))
    }
}

/// rgitaly's own: what a client connection may hold (not in upstream, whose grpc-go has no such caps).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Connections {
    /// Open connections per listener; one more is closed on accept. Default 4096.
    pub max_per_listener: Option<usize>,
    /// Concurrent HTTP/2 streams (calls) per connection. Default 1024.
    pub max_streams: Option<u32>,
    /// A connection that sends no request within this is closed. Default "10s".
    pub first_request_timeout: Option<GoDuration>,
    /// HTTP/2 PING to a connection idle this long. Default "30s".
    pub keepalive_interval: Option<GoDuration>,
    /// A connection that does not answer a PING within this is closed. Default "20s".
    pub keepalive_timeout: Option<GoDuration>,
}

impl Connections {
    pub fn max_per_listener(&self) -> usize {
        self.max_per_listener.unwrap_or(4096).max(1)
    }
    pub fn max_streams(&self) -> u32 {
        self.max_streams.unwrap_or(1024).max(1)
    }
    pub fn first_request_timeout(&self) -> Duration {
        self.first_request_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(10))
    }
    pub fn keepalive_interval(&self) -> Duration {
        self.keepalive_interval.map(|d| d.0).unwrap_or(Duration::from_secs(30))
    }
    pub fn keepalive_timeout(&self) -> Duration {
        self.keepalive_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(20))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Auth {
    pub token: String,
    pub transitioning: bool,
    pub previous_tokens: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Tls {
    pub certificate_path: Option<PathBuf>,
    pub key_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Storage {
    pub name: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Logging {
    pub format: Option<String>,
    pub level: Option<String>,
    pub dir: Option<PathBuf>,
    pub sentry_dsn: Option<String>,
    pub sentry_environment: Option<String>,
    pub ruby_sentry_dsn: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Git {
    pub bin_path: Option<PathBuf>,
    pub catfile_cache_size: Option<u32>,
    pub config: Vec<GitConfigEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GitConfigEntry {
    pub key: String,
    pub value: String,
}

/// `[gitaly-ruby]` upstream; `[workers]` is our name for the same knobs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GitalyRuby {
    pub dir: Option<PathBuf>,
    pub max_rss: Option<u64>,
    pub graceful_restart_timeout: Option<GoDuration>,
    pub restart_delay: Option<GoDuration>,
    pub num_workers: Option<u32>,
    pub linguist_languages_path: Option<PathBuf>,
    pub rugged_git_config_search_path: Option<PathBuf>,
    pub memory_check_interval: Option<GoDuration>,
    pub health_check_interval: Option<GoDuration>,
    pub health_failure_timeout: Option<GoDuration>,
    pub crash_threshold: Option<u32>,
    pub crash_wait_time: Option<GoDuration>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Concurrency {
    pub rpc: String,
    #[serde(default)]
    pub max_per_repo: u32,
    #[serde(default)]
    pub max_queue_size: Option<u32>,
    #[serde(default)]
    pub max_queue_wait: Option<GoDuration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Prometheus {
    pub grpc_latency_buckets: Vec<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Timeout {
    pub upload_pack_negotiation: Option<GoDuration>,
    pub upload_archive_negotiation: Option<GoDuration>,
}

/// A duration in Go's `time.ParseDuration` form ("90s", "1m30s", "500ms"), as upstream configs write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_go_duration(&s).map(GoDuration).map_err(serde::de::Error::custom)
    }
}

/// Parses Go's duration syntax: a sequence of decimal numbers each with a unit (ns, us, µs, ms, s, m, h).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}");
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// Every key upstream v13.12 defines (and ours), as dotted paths; `*` matches any table name under it.
const KNOWN_KEYS: &[&str] = &[
    "socket_path",
    "listen_addr",
    "tls_listen_addr",
    "prometheus_listen_addr",
    "bin_dir",
    "internal_socket_dir",
    "runtime_dir",
    "graceful_restart_timeout",
    "auth.token",
    "auth.transitioning",
    "auth.previous_tokens",
    "tls.certificate_path",
    "tls.key_path",
    "storage.name",
    "storage.path",
    "logging.format",
    "logging.level",
    "logging.dir",
    "logging.sentry_dsn",
    "logging.sentry_environment",
    "logging.ruby_sentry_dsn",
    "git.bin_path",
    "git.catfile_cache_size",
    "git.config.key",
    "git.config.value",
    "gitaly-ruby.dir",
    "gitaly-ruby.max_rss",
    "gitaly-ruby.graceful_restart_timeout",
    "gitaly-ruby.restart_delay",
    "gitaly-ruby.num_workers",
    "gitaly-ruby.linguist_languages_path",
    "gitaly-ruby.rugged_git_config_search_path",
    "workers.max_rss",
    "workers.graceful_restart_timeout",
    "workers.restart_delay",
    "workers.num_workers",
    "workers.memory_check_interval",
    "workers.health_check_interval",
    "workers.health_failure_timeout",
    "workers.crash_threshold",
    "workers.crash_wait_time",
    "connections.max_per_listener",
    "connections.max_streams",
    "connections.first_request_timeout",
    "connections.keepalive_interval",
    "connections.keepalive_timeout",
    "read_cache.threads",
    "read_cache.max_bytes",
    "read_cache.handle_bytes",
    "read_cache.idle_timeout",
    "gitlab-shell.dir",
    "gitlab.url",
    "gitlab.relative_url_root",
    "gitlab.secret_file",
    "gitlab.http-settings.*",
    "hooks.custom_hooks_dir",
    "concurrency.rpc",
    "concurrency.max_per_repo",
    "concurrency.max_queue_size",
    "concurrency.max_queue_wait",
    "prometheus.grpc_latency_buckets",
    "pack_objects_cache.enabled",
    "pack_objects_cache.dir",
    "pack_objects_cache.max_age",
    "timeout.upload_pack_negotiation",
    "timeout.upload_archive_negotiation",
    "daily_maintenance.start_hour",
    "daily_maintenance.start_minute",
    "daily_maintenance.duration",
    "daily_maintenance.storages",
    "daily_maintenance.disabled",
    "cgroups.*",
];

/// Keys that parse but whose feature rgitaly does not have yet; setting them changes nothing today.
const NOT_BUILT_KEYS: &[(&str, &str)] = &[
    ("pack_objects_cache.enabled", "the pack-objects cache is not built"),
    ("cgroups", "cgroups are not built"),
    ("logging.sentry_dsn", "Sentry reporting is not built"),
];

/// What loading found that an operator should hear about but that does not stop the daemon.
#[derive(Debug, Default)]
pub struct Warnings(pub Vec<String>);

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<(Config, Warnings), ConfigError> {
        let file = path.display().to_string();
        let err = |message: String| ConfigError { file: file.clone(), message };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("read: {e}")))?;
        let (cfg, warnings) = Self::parse(&text).map_err(err)?;
        cfg.validate().map_err(|m| ConfigError { file: file.clone(), message: m })?;
        Ok((cfg, warnings))
    }

    /// Parses config text without touching the file system.
    pub fn parse(text: &str) -> Result<(Config, Warnings), String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| format!("parse: {}", e.to_string().trim_end()))?;
        let mut warnings = Warnings::default();
        let mut seen = BTreeSet::new();
        collect_unknown(&toml::Value::Table(table.clone()), "", &mut seen);
        for key in seen {
            warnings.0.push(format!("unknown key {key:?} ignored"));
        }
        // Deserializing from the text (not the table) keeps spans, so type errors show the offending line.
        let cfg: Config = toml::from_str(text).map_err(|e| format!("parse: {}", e.to_string().trim_end()))?;
        for (key, why) in NOT_BUILT_KEYS {
            if is_set(&table, key) {
                warnings.0.push(format!("key {key:?} is set but {why}"));
            }
        }
        Ok((cfg, warnings))
    }

    /// Upstream's validation: a listener, storages that exist, unique and not nested.
    pub fn validate(&self) -> Result<(), String> {
        if self.socket_path.is_none() && self.listen_addr.is_none() && self.tls_listen_addr.is_none() {
            return Err("at least one of socket_path, listen_addr or tls_listen_addr must be set".into());
        }
        if self.tls_listen_addr.is_some() && (self.tls.certificate_path.is_none() || self.tls.key_path.is_none()) {
            return Err("tls_listen_addr: tls.certificate_path and tls.key_path must be set".into());
        }
        if self.storage.is_empty() {
            return Err("storage: at least one [[storage]] must be configured".into());
        }
        // Previous tokens without a current one would leave authentication off while looking rotated.
        if self.auth.token.is_empty() && self.auth.previous_tokens.iter().any(|t| !t.is_empty()) {
            return Err("auth.token: empty while auth.previous_tokens are set".into());
        }
        let mut names = BTreeSet::new();
        for (i, s) in self.storage.iter().enumerate() {
            if s.name.is_empty() {
                return Err(format!("storage[{i}].name: empty storage name"));
            }
            if !names.insert(s.name.as_str()) {
                return Err(format!("storage[{i}].name: storage {:?} is defined more than once", s.name));
            }
            if s.path.as_os_str().is_empty() {
                return Err(format!("storage[{i}].path: empty storage path for storage {:?}", s.name));
            }
            match std::fs::metadata(&s.path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(format!("storage[{i}].path: storage path {:?} is not a dir", s.path)),
                Err(e) => return Err(format!("storage[{i}].path: storage path {:?}: {e}", s.path)),
            }
        }
        for (i, a) in self.storage.iter().enumerate() {
            for (j, b) in self.storage.iter().enumerate() {
                if i == j {
                    continue;
                }
                let (pa, pb) = (clean(&a.path), clean(&b.path));
                // The same path twice is allowed (as upstream); one inside the other is not.
                if pa != pb && pa.starts_with(&pb) {
                    return Err(format!(
                        "storage[{i}].path: storage paths may not nest: {:?} and {:?}",
                        a.name, b.name
                    ));
                }
            }
        }
        if let Some(dm) = &self.daily_maintenance {
            for s in &dm.storages {
                if !self.storage.iter().any(|st| &st.name == s) {
                    return Err(format!(
                        "daily_maintenance.storages: daily maintenance specified storage {s:?} does not exist in configuration"
                    ));
                }
            }
            if dm.start_hour > 23 {
                return Err(format!(
                    "daily_maintenance.start_hour: daily maintenance specified hour '{}' outside range (0-23)",
                    dm.start_hour
                ));
            }
            if dm.start_minute > 59 {
                return Err(format!(
                    "daily_maintenance.start_minute: daily maintenance specified minute '{}' outside range (0-59)",
                    dm.start_minute
                ));
            }
            if dm.duration.is_some_and(|d| d.0 > Duration::from_secs(24 * 3600)) {
                return Err(
                    "daily_maintenance.duration: daily maintenance specified duration must be less than 24 hours"
                        .into(),
                );
            }
        }
        if let Some(bin) = &self.git.bin_path {
            if !bin.is_file() {
                return Err(format!("git.bin_path: {:?} is not a file", bin));
            }
        }
        for (i, c) in self.git.config.iter().enumerate() {
            let why = if c.key.is_empty() {
                Some("key cannot be empty")
            } else if c.key.contains('=') {
                Some("key cannot contain assignment")
            } else if !c.key.contains('.') {
                Some("key must contain at least one section")
            } else if c.key.starts_with('.') || c.key.ends_with('.') {
                Some("key must not start or end with a dot")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(format!("git.config[{i}].key: invalid configuration key {:?}: {why}", c.key));
            }
            if c.value.is_empty() {
                return Err(format!("git.config[{i}].value: invalid configuration value: {:?}", c.value));
            }
        }
        Ok(())
    }

    pub fn graceful_restart_timeout(&self) -> Duration {
        self.graceful_restart_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(60))
    }

    pub fn upload_pack_negotiation_timeout(&self) -> Duration {
        self.timeout.upload_pack_negotiation.map(|d| d.0).unwrap_or(Duration::from_secs(600))
    }

    pub fn upload_archive_negotiation_timeout(&self) -> Duration {
        self.timeout.upload_archive_negotiation.map(|d| d.0).unwrap_or(Duration::from_secs(60))
    }

    fn gitlab_shell_dir(&self) -> Option<PathBuf> {
        self.gitlab_shell.get("dir").and_then(|v| v.as_str()).filter(|d| !d.is_empty()).map(PathBuf::from)
    }

    /// The GitLab shared secret's file, as upstream defaults it.
    pub fn gitlab_secret_file(&self) -> PathBuf {
        self.gitlab
            .secret_file
            .clone()
            .unwrap_or_else(|| self.gitlab_shell_dir().unwrap_or_default().join(".gitlab_shell_secret"))
    }

    /// The global custom hooks directory, as upstream defaults it; none when neither key is set.
    pub fn custom_hooks_dir(&self) -> Option<PathBuf> {
        self.hooks.custom_hooks_dir.clone().or_else(|| self.gitlab_shell_dir().map(|d| d.join("hooks")))
    }

    /// Where the daemon keeps its private sockets and scratch files.
    pub fn internal_dir(&self) -> PathBuf {
        if let Some(d) = self.internal_socket_dir.as_ref().or(self.runtime_dir.as_ref()) {
            return d.clone();
        }
        std::env::temp_dir().join(format!("rgitaly-{}", std::process::id()))
    }
}

fn clean(p: &Path) -> PathBuf {
    let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mut s = p.into_os_string();
    s.push("/");
    PathBuf::from(s)
}

fn is_set(table: &toml::Table, dotted: &str) -> bool {
    let mut cur = table;
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        match cur.get(part) {
            None => return false,
            Some(toml::Value::Table(t)) if parts.peek().is_some() => cur = t,
            Some(toml::Value::String(s)) => return !s.is_empty(),
            Some(toml::Value::Boolean(b)) => return *b,
            Some(toml::Value::Array(a)) => return !a.is_empty(),
            Some(_) => return parts.peek().is_none(),
        }
    }
    false
}

fn is_known(path: &str) -> bool {
    KNOWN_KEYS.iter().any(|known| match known.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix) || path == prefix.trim_end_matches('.'),
        None => *known == path,
    })
}

/// Collects the leaf keys of `v` that no upstream or rgitaly setting uses.
fn collect_unknown(v: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    let toml::Value::Table(t) = v else { return };
    for (k, v) in t {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(_) => collect_unknown(v, &path, out),
            toml::Value::Array(items) if !items.is_empty() && items.iter().all(|i| i.is_table()) => {
                for item in items {
                    collect_unknown(item, &path, out);
                }
            }
            _ if is_known(&path) => {}
            _ => {
                out.insert(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_go_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_go_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("fast").is_err());
        assert!(parse_go_duration("").is_err());
    }

    #[test]
    fn upstream_config_parses_with_warnings_for_unknown_keys() {
        let text = r#"
socket_path = "/tmp/gitaly.socket"
bin_dir = "/usr/local/bin"
graceful_restart_timeout = "1m"
ruby_only_thing = true

[[storage]]
name = "default"
path = "/tmp"

[git]
catfile_cache_size = 100
[[git.config]]
key = "core.fsyncObjectFiles"
value = "true"

[gitaly-ruby]
dir = "/srv/gitaly-ruby"
num_workers = 3
restart_delay = "5m"

[gitlab.http-settings]
self_signed_cert = false

[[concurrency]]
rpc = "/gitaly.SmartHTTPService/PostUploadPack"
max_per_repo = 20

[logging]
format = "json"
rugged_option = 1
"#;
        let (cfg, warnings) = Config::parse(text).unwrap();
        assert_eq!(cfg.storage[0].name, "default");
        assert_eq!(cfg.gitaly_ruby.num_workers, Some(3));
        assert_eq!(cfg.git.config[0].key, "core.fsyncObjectFiles");
        assert_eq!(cfg.concurrency[0].max_per_repo, 20);
        let all = warnings.0.join("\n");
        assert!(all.contains("\"ruby_only_thing\""), "{all}");
        assert!(all.contains("\"logging.rugged_option\""), "{all}");
        assert!(!all.contains("self_signed_cert"), "{all}");
    }

    #[test]
    fn validation_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().display();
        let bad = [
            (format!("[[storage]]\nname = \"a\"\npath = \"{p}\""), "socket_path"),
            ("socket_path = \"/x\"".to_string(), "storage"),
            (
                format!("socket_path = \"/x\"\n[[storage]]\nname = \"a\"\npath = \"{p}\"\n[[storage]]\nname = \"a\"\npath = \"{p}/b\""),
                "storage[1].name",
            ),
            (format!("socket_path = \"/x\"\n[[storage]]\nname = \"a\"\npath = \"{p}/missing\""), "storage[0].path"),
            (
                format!("socket_path = \"/x\"\n[[storage]]\nname = \"a\"\npath = \"{p}\"\n[auth]\nprevious_tokens = [\"old\"]"),
                "auth.token",
            ),
        ];
        for (text, key) in bad {
            let (cfg, _) = Config::parse(&text).unwrap();
            let e = cfg.validate().unwrap_err();
            assert!(e.contains(key), "{e} should name {key}");
        }
        std::fs::create_dir(dir.path().join("nested")).unwrap();
        let (cfg, _) = Config::parse(&format!(
            "socket_path = \"/x\"\n[[storage]]\nname = \"a\"\npath = \"{p}\"\n[[storage]]\nname = \"b\"\npath = \"{p}/nested\""
        ))
        .unwrap();
        assert!(cfg.validate().unwrap_err().contains("nest"));
    }

    #[test]
    fn type_errors_are_reported() {
        let e = Config::parse("socket_path = 3").unwrap_err();
        assert!(e.contains("socket_path") || e.contains("string"), "{e}");
    }
}
