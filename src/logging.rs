//! Log output as `[logging]` asks: JSON or text lines on stderr (or appended to `dir/rgitaly.log`), at
//! `level`.

use std::sync::Mutex;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::Logging;

/// Installs the global subscriber. `RGITALY_LOG` (an env-filter directive) overrides the level.
pub fn init(cfg: &Logging) -> std::io::Result<()> {
    match &cfg.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            let file = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("rgitaly.log"))?;
            install(cfg, Mutex::new(file), false)
        }
        // Colour only for a person watching: a log file or journald gets plain text.
        None => install(cfg, std::io::stderr, std::io::IsTerminal::is_terminal(&std::io::stderr())),
    }
}

fn install<W>(cfg: &Logging, writer: W, ansi: bool) -> std::io::Result<()>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let level = cfg.level.clone().unwrap_or_else(|| "info".to_string());
    let filter = EnvFilter::try_from_env("RGITALY_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    let result = if cfg.format.as_deref() == Some("json") {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| std::io::Error::other(e.to_string()))
}
