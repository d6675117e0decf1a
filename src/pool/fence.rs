//! The ref updates the daemon runs for a worker (RefUpdateService), counted per worker process, so that
//! the pool can tell when a dead worker can change nothing more.
//!
//! A worker's ref update outlives the worker: once the daemon has the request it finishes the swap and
//! releases the lock, whatever becomes of the caller. That is why it runs in the daemon. But the pool
//! must not read the refs to answer "nothing was written" while such an update is still running, nor
//! while a request the worker sent just before it died is still to be read from its connection. So a
//! dead worker's process id is fenced: its running updates are waited for, and any request of it that
//! arrives later is refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long a dead worker's process id stays refused; a request it sent is read from its connection
/// within milliseconds, and a new process rarely gets the same id this soon (and `admit` forgets it then).
const FENCED_FOR: Duration = Duration::from_secs(60);

#[derive(Default)]
struct State {
    running: HashMap<u32, usize>,
    fenced: HashMap<u32, Instant>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);
static ENDED: Notify = Notify::const_new();

fn with<T>(f: impl FnOnce(&mut State) -> T) -> T {
    let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(State::default))
}

/// One running update of a worker's; ends when dropped.
pub struct Running(u32);

impl Drop for Running {
    fn drop(&mut self) {
        with(|s| {
            if let Some(n) = s.running.get_mut(&self.0) {
                *n -= 1;
                if *n == 0 {
                    s.running.remove(&self.0);
                }
            }
        });
        ENDED.notify_waiters();
    }
}

/// An update for the process `pid` starts; None when that worker is dead and fenced.
pub fn begin(pid: u32) -> Option<Running> {
    with(|s| {
        s.fenced.retain(|_, at| at.elapsed() < FENCED_FOR);
        if s.fenced.contains_key(&pid) {
            return None;
        }
        *s.running.entry(pid).or_default() += 1;
        Some(Running(pid))
    })
}

/// A new worker process: whatever an earlier process with its id left fenced no longer applies.
pub fn admit(pid: u32) {
    with(|s| s.fenced.remove(&pid));
}

/// Refuses every later update for the dead process `pid` and waits until those running have ended.
pub async fn close(pid: u32) {
    with(|s| s.fenced.insert(pid, Instant::now()));
    loop {
        let ended = ENDED.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        if !with(|s| s.running.contains_key(&pid)) {
            return;
        }
        ended.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_process_waits_for_its_updates_and_gets_no_more() {
        let pid = u32::MAX - 7;
        let running = begin(pid).unwrap();
        let closing = tokio::spawn(close(pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!closing.is_finished(), "close returned while an update was running");
        assert!(begin(pid).is_none(), "an update started after close");
        drop(running);
        tokio::time::timeout(Duration::from_secs(5), closing).await.unwrap().unwrap();
        assert!(begin(pid).is_none());
        admit(pid);
        assert!(begin(pid).is_some(), "a new process with the id is admitted");
    }
}
