//! How the daemon stops: the signals it acts on (installed first thing), why it stops, and the pieces of
//! an orderly stop — stop accepting, GOAWAY a moment later, remove the sockets it created.

use std::path::PathBuf;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// The signals the daemon acts on. Installed as the very first thing, so a signal that arrives while the
/// daemon is still starting is acted on rather than killing it with the default action.
pub struct Signals {
    pub(super) term: Signal,
    pub(super) int: Signal,
    pub(super) hup: Signal,
    pub(super) usr2: Signal,
}

impl Signals {
    pub fn install() -> Signals {
        let s = |kind, name| signal(kind).unwrap_or_else(|e| panic!("install {name} handler: {e}"));
        Signals {
            term: s(SignalKind::terminate(), "SIGTERM"),
            int: s(SignalKind::interrupt(), "SIGINT"),
            hup: s(SignalKind::hangup(), "SIGHUP"),
            usr2: s(SignalKind::user_defined2(), "SIGUSR2"),
        }
    }
}

/// Why the daemon stops serving.
pub(super) enum Stop {
    /// SIGTERM or SIGINT: drain and exit.
    Terminate,
    /// A successor took over the listeners: drain and exit, leaving the Unix socket in place.
    HandedOver,
}

/// Between no longer accepting and telling open connections to finish.
pub(super) const GOAWAY_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

pub(super) fn cleanup(sockets: &[PathBuf]) {
    for s in sockets {
        let _ = std::fs::remove_file(s);
    }
}
