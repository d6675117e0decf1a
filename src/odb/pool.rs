//! The threads that run object reads: a fixed few, sized to the cores, instead of tokio's blocking pool.
//!
//! tokio's blocking pool starts a thread for every blocking call that finds none idle, up to 512, and keeps
//! each for 10 s after. Reads are CPU work on a machine with a few cores: more threads than cores only
//! interleave them, and every thread had its own repository handles with their caches (measured: 16
//! GetBlob callers grew the daemon to 23 threads and 488 MB that never came back). Here calls queue for a
//! fixed set of threads started once, so the thread count is what the operator configured
//! (`[read_cache] threads`) whatever the load, and memory follows the handle budget in [`super`].

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, OnceLock};

use tonic::Status;

type Job = Box<dyn FnOnce() + Send>;

/// Calls waiting for a thread, and the signal that one was queued.
static QUEUE: Mutex<VecDeque<Job>> = Mutex::new(VecDeque::new());
static READY: Condvar = Condvar::new();

/// The pool's size, set when its threads start.
static THREADS: OnceLock<usize> = OnceLock::new();

/// The default size: one thread per core (at least two, so a long listing does not stall every read).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2)
}

/// Starts the pool with `threads` threads (0: [`default_threads`]). Only the first call counts; a read
/// before any call starts it at the default size. Returns the size in force.
pub fn init(threads: usize) -> usize {
    start(if threads == 0 { default_threads() } else { threads })
}

fn start(threads: usize) -> usize {
    *THREADS.get_or_init(|| {
        for i in 0..threads {
            std::thread::Builder::new().name(format!("rgitaly-read-{i}")).spawn(work).expect("start read thread");
        }
        crate::metrics::READ_THREADS.set(threads as i64);
        threads
    })
}

fn queue() -> std::sync::MutexGuard<'static, VecDeque<Job>> {
    QUEUE.lock().unwrap_or_else(|e| e.into_inner())
}

fn work() {
    loop {
        let job = {
            let mut queue = queue();
            loop {
                if let Some(job) = queue.pop_front() {
                    crate::metrics::READ_QUEUE.set(queue.len() as i64);
                    break job;
                }
                queue = READY.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        };
        crate::metrics::READ_THREADS_BUSY.inc();
        // A panicking read fails its call (its answer channel is dropped), not the thread.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        crate::metrics::READ_THREADS_BUSY.dec();
    }
}

/// Runs `f` on a read thread and waits for it without blocking the caller's thread. A call dropped before
/// its turn comes is skipped. `f` runs inside the caller's runtime context, so it may use
/// `tokio::runtime::Handle::current()`.
pub async fn run<T, F>(f: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Handle::try_current().ok();
    let job: Job = Box::new(move || {
        if tx.is_closed() {
            return;
        }
        let _entered = runtime.as_ref().map(|r| r.enter());
        let _ = tx.send(f());
    });
    threads();
    {
        let mut queue = queue();
        queue.push_back(job);
        crate::metrics::READ_QUEUE.set(queue.len() as i64);
    }
    READY.notify_one();
    rx.await.map_err(|_| Status::internal("read task failed"))
}

/// How many threads the pool has (starting it at the default size if nothing did). Runs at every read: the
/// default size is only worked out when the pool is not started yet (`available_parallelism` reads the
/// cgroup files in /proc, which cost a tenth of a GetBlob's time when it ran on every call).
pub fn threads() -> usize {
    match THREADS.get() {
        Some(&n) => n,
        None => start(default_threads()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However many calls wait at once, they run on the pool's few threads, each exactly once, and a
    /// panicking call fails alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_calls_share_the_pool_threads() {
        let n = threads();
        let calls: Vec<_> = (0..200)
            .map(|i| {
                tokio::spawn(run(move || {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    (i, std::thread::current().name().unwrap_or_default().to_string())
                }))
            })
            .collect();
        let mut names = std::collections::HashSet::new();
        for (i, c) in calls.into_iter().enumerate() {
            let (j, name) = c.await.unwrap().unwrap();
            assert_eq!(i, j);
            assert!(name.starts_with("rgitaly-read-"), "{name}");
            names.insert(name);
        }
        assert!(names.len() <= n, "{names:?} on a pool of {n}");
        let failed = run(|| -> () { panic!("boom") }).await;
        assert!(failed.is_err());
        assert_eq!(run(|| 7).await.unwrap(), 7);
    }
}
