//! In-process reads of objects, refs and history with gitoxide (`gix`), so the hot read RPCs fork nothing.
//!
//! Opening a repository costs far more than a lookup in it (config, the pack index list), so open
//! repositories are kept, keyed by the locator's absolute path. A repository is reopened when its packs or
//! packed refs change on disk (a repack, `git gc`, `pack-refs`), which a long-lived handle might otherwise
//! not see; loose refs and loose objects are read fresh by gix on every lookup.
//!
//! Reads go through handles (a `gix::Repository` each), whose object and delta-base caches keep repeated
//! reads fast. Those caches are the daemon's memory under read load, so they come out of one budget
//! (`[read_cache] max_bytes`): a handle is given caches of `handle_bytes` only while the budget has room,
//! idle handles are shared by every thread and reused warm, the oldest idle ones give their caches up
//! when a new handle needs the room, and handles and repositories unused for `idle_timeout` are closed,
//! freeing their caches and unmapping their packs. Memory is then a budget the operator sets, not a
//! function of how many threads or callers there are (each thread once kept its own handles: 16 GetBlob
//! callers left 488 MB behind).
//!
//! Paths come only from the [`crate::locator::Locator`]; nothing here joins client input onto a path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tonic::Status;

use crate::metrics;

/// How many repositories stay open. Each holds its pack index maps (mmaps), not the packs' data.
const CAPACITY: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum OdbError {
    #[error("open repository: {0}")]
    Open(String),
}

impl From<OdbError> for Status {
    fn from(e: OdbError) -> Status {
        Status::internal(e.to_string())
    }
}

/// What the packs and packed refs looked like when a repository was opened.
type Stamp = [Option<(SystemTime, u64)>; 2];

fn stamp(git_dir: &Path) -> Stamp {
    let s = |p: PathBuf| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
    [s(git_dir.join("objects/pack")), s(git_dir.join("packed-refs"))]
}

/// The read budget (`[read_cache]`, and `[git] catfile_cache_size` for the idle handles).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes all handles' caches may hold together.
    pub max_bytes: usize,
    /// One handle's caches.
    pub handle_bytes: usize,
    /// Idle handles and unused repositories are closed after this long.
    pub idle_timeout: Duration,
    /// Most idle handles kept.
    pub max_idle: usize,
}

/// The defaults of an empty config.
impl Default for Limits {
    fn default() -> Limits {
        Limits::from_config(&crate::config::Config::default())
    }
}

impl Limits {
    pub fn from_config(config: &crate::config::Config) -> Limits {
        let r = &config.read_cache;
        Limits {
            max_bytes: r.max_bytes(),
            handle_bytes: r.handle_bytes(),
            idle_timeout: r.idle_timeout(),
            max_idle: config.git.catfile_cache_size.unwrap_or(100) as usize,
        }
    }
}

/// A handle not in use, with the part of the budget its caches hold.
struct Idle {
    repo: gix::Repository,
    reserved: usize,
    since: Instant,
}

struct Entry {
    repo: gix::ThreadSafeRepository,
    stamp: Stamp,
    /// Changes when the repository is reopened, so handles of the old one are not kept.
    generation: u64,
    used: u64,
    last_used: Instant,
    idle: Vec<Idle>,
    in_use: usize,
}

/// Open repositories and their handles, least recently used closed first.
pub struct RepoCache {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Cache>,
    limits: Limits,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<PathBuf, Entry>,
    clock: u64,
    generations: u64,
    /// Budget bytes held by handles' caches, in use and idle.
    reserved: usize,
    idle: usize,
    in_use: usize,
}

impl Default for RepoCache {
    fn default() -> RepoCache {
        RepoCache::new(Limits::default())
    }
}

impl std::fmt::Debug for RepoCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoCache").field("limits", &self.shared.limits).finish_non_exhaustive()
    }
}

/// A repository handle, for one thread at a time; goes back to the cache when dropped.
pub struct Handle {
    repo: Option<gix::Repository>,
    path: PathBuf,
    generation: u64,
    reserved: usize,
    cache: Arc<Shared>,
}

impl std::ops::Deref for Handle {
    type Target = gix::Repository;
    fn deref(&self) -> &gix::Repository {
        self.repo.as_ref().expect("present until dropped")
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let Some(repo) = self.repo.take() else { return };
        let path = std::mem::take(&mut self.path);
        let closed = self.cache.give_back(path, self.generation, self.reserved, repo);
        // Caches are freed here, outside the lock.
        drop(closed);
    }
}

impl Cache {
    /// Closes the entry for `path` and its idle handles; its handles in use are closed when they come back.
    fn remove(&mut self, path: &Path, reason: &str, closed: &mut Vec<gix::Repository>) {
        if let Some(e) = self.entries.remove(path) {
            metrics::READ_EVICTIONS.with_label_values(&[reason]).inc_by(1 + e.idle.len() as u64);
            for h in e.idle {
                self.reserved -= h.reserved;
                self.idle -= 1;
                closed.push(h.repo);
            }
        }
    }

    /// Takes `want` bytes of the budget, closing the longest-idle handles if that makes room; 0 if it
    /// does not (the handles in use hold the rest).
    fn reserve(&mut self, want: usize, max: usize, closed: &mut Vec<gix::Repository>) -> usize {
        while self.reserved + want > max {
            let oldest = self
                .entries
                .iter()
                .filter_map(|(p, e)| e.idle.first().map(|h| (h.since, p)))
                .min()
                .map(|(_, p)| p.clone());
            let Some(path) = oldest else { return 0 };
            let e = self.entries.get_mut(&path).expect("found above");
            let h = e.idle.remove(0);
            self.reserved -= h.reserved;
            self.idle -= 1;
            closed.push(h.repo);
            metrics::READ_EVICTIONS.with_label_values(&["budget"]).inc();
        }
        self.reserved += want;
        want
    }

    /// Brings the gauges up to date; runs at every open and return, so the labelled series are looked up
    /// once.
    fn publish(&self) {
        static GAUGES: std::sync::LazyLock<[prometheus::IntGauge; 4]> = std::sync::LazyLock::new(|| {
            [
                metrics::READ_CACHE_BYTES.with_label_values(&["object"]),
                metrics::READ_CACHE_BYTES.with_label_values(&["delta"]),
                metrics::READ_HANDLES.with_label_values(&["in_use"]),
                metrics::READ_HANDLES.with_label_values(&["idle"]),
            ]
        });
        let [object, delta, in_use, idle] = &*GAUGES;
        // Each handle's budget is split between its object cache (a quarter) and delta-base cache.
        object.set((self.reserved / 4) as i64);
        delta.set((self.reserved - self.reserved / 4) as i64);
        in_use.set(self.in_use as i64);
        idle.set(self.idle as i64);
        metrics::READ_REPOSITORIES.set(self.entries.len() as i64);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a handle coming back from use, warm, unless its repository changed or enough are idle;
    /// returns it when it is to be closed.
    fn give_back(
        &self,
        path: PathBuf,
        generation: u64,
        reserved: usize,
        repo: gix::Repository,
    ) -> Option<gix::Repository> {
        let mut guard = self.lock();
        let c = &mut *guard;
        c.in_use -= 1;
        let mut keep = None;
        if let Some(e) = c.entries.get_mut(&path) {
            if e.generation == generation {
                e.in_use -= 1;
                e.last_used = Instant::now();
                if reserved > 0 && c.idle < self.limits.max_idle {
                    keep = Some(e);
                } else if reserved > 0 {
                    metrics::READ_EVICTIONS.with_label_values(&["count"]).inc();
                }
            }
        }
        let closed = match keep {
            Some(e) => {
                e.idle.push(Idle { repo, reserved, since: Instant::now() });
                c.idle += 1;
                None
            }
            None => {
                c.reserved -= reserved;
                Some(repo)
            }
        };
        c.publish();
        closed
    }
}

impl RepoCache {
    pub fn new(limits: Limits) -> RepoCache {
        metrics::READ_CACHE_BUDGET.set(limits.max_bytes as i64);
        RepoCache { shared: Arc::new(Shared { inner: Mutex::new(Cache::default()), limits }) }
    }

    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// A handle for the repository at `path` (already resolved by the locator).
    pub fn open(&self, path: &Path) -> Result<Handle, OdbError> {
        let now = stamp(path);
        let mut closed = Vec::new();
        let found = {
            let mut guard = self.shared.lock();
            let c = &mut *guard;
            c.clock += 1;
            let clock = c.clock;
            let fresh = c.entries.get(path).map(|e| e.stamp == now);
            let found = match fresh {
                Some(true) => {
                    let e = c.entries.get_mut(path).expect("found above");
                    e.used = clock;
                    e.last_used = Instant::now();
                    e.in_use += 1;
                    let idle = e.idle.pop();
                    let found = (e.generation, e.repo.clone(), idle);
                    c.in_use += 1;
                    if found.2.is_some() {
                        c.idle -= 1;
                    }
                    Some(found)
                }
                Some(false) => {
                    c.remove(path, "changed", &mut closed);
                    None
                }
                None => None,
            };
            c.publish();
            found
        };
        drop(closed);
        let (generation, shared) = match found {
            Some((generation, _, Some(idle))) => {
                return Ok(self.handle(path, generation, idle.reserved, idle.repo));
            }
            Some((generation, shared, None)) => (generation, shared),
            None => self.reopen(path, now)?,
        };
        let mut closed = Vec::new();
        let reserved = {
            let mut c = self.shared.lock();
            let r = c.reserve(self.shared.limits.handle_bytes, self.shared.limits.max_bytes, &mut closed);
            c.publish();
            r
        };
        drop(closed);
        Ok(self.handle(path, generation, reserved, new_handle(&shared, reserved)))
    }

    fn handle(&self, path: &Path, generation: u64, reserved: usize, repo: gix::Repository) -> Handle {
        Handle { repo: Some(repo), path: path.to_path_buf(), generation, reserved, cache: self.shared.clone() }
    }

    /// Opens `path` afresh (outside the lock: a slow open does not hold up other repositories), records it
    /// and counts one handle of it in use.
    fn reopen(&self, path: &Path, now: Stamp) -> Result<(u64, gix::ThreadSafeRepository), OdbError> {
        let repo = gix::open_opts(path, options()).map_err(|e| OdbError::Open(e.to_string()))?.into_sync();
        let mut closed = Vec::new();
        let mut guard = self.shared.lock();
        let c = &mut *guard;
        // Another call may have opened it meanwhile: the newer one wins, the older one's handles are closed
        // as they come back.
        c.remove(path, "changed", &mut closed);
        if c.entries.len() >= CAPACITY {
            if let Some(oldest) = c.entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone()) {
                c.remove(&oldest, "capacity", &mut closed);
            }
        }
        c.generations += 1;
        c.clock += 1;
        let (generation, used) = (c.generations, c.clock);
        let entry = Entry {
            repo: repo.clone(),
            stamp: now,
            generation,
            used,
            last_used: Instant::now(),
            idle: Vec::new(),
            in_use: 1,
        };
        c.entries.insert(path.to_path_buf(), entry);
        c.in_use += 1;
        c.publish();
        drop(guard);
        drop(closed);
        Ok((generation, repo))
    }

    /// Forgets the repository at `path`, after it was removed or rewritten under us.
    pub fn forget(&self, path: &Path) {
        let mut closed = Vec::new();
        let mut c = self.shared.lock();
        c.remove(path, "changed", &mut closed);
        c.publish();
        drop(c);
        drop(closed);
    }

    /// Closes handles idle for longer than `idle_timeout`, and repositories with no handle left that were
    /// not used for as long (unmapping their packs). Returns how many handles and repositories it closed.
    pub fn sweep(&self) -> usize {
        let Some(cutoff) = Instant::now().checked_sub(self.shared.limits.idle_timeout) else { return 0 };
        let mut closed = Vec::new();
        let mut guard = self.shared.lock();
        let c = &mut *guard;
        let mut unused = Vec::new();
        for (path, e) in c.entries.iter_mut() {
            let old = e.idle.iter().take_while(|h| h.since <= cutoff).count();
            for h in e.idle.drain(..old) {
                c.reserved -= h.reserved;
                c.idle -= 1;
                closed.push(h.repo);
                metrics::READ_EVICTIONS.with_label_values(&["idle"]).inc();
            }
            if e.in_use == 0 && e.idle.is_empty() && e.last_used <= cutoff {
                unused.push(path.clone());
            }
        }
        let repositories = unused.len();
        for path in unused {
            c.remove(&path, "idle", &mut closed);
        }
        c.publish();
        drop(guard);
        let n = closed.len() + repositories;
        drop(closed);
        n
    }

    /// Runs [`RepoCache::sweep`] a few times per `idle_timeout`, for as long as the task lives, and hands
    /// freed memory back to the system after reads (see [`crate::memory::release`]).
    pub async fn sweep_forever(&self) {
        let every = (self.shared.limits.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let mut seen = 0;
        let mut freed = false;
        loop {
            tokio::time::sleep(every).await;
            freed |= self.sweep() > 0;
            // Memory goes back when no read is running (a trim takes the allocator's locks, which a read
            // would wait for): once reads have stopped, or at a moment between two under a light load; and
            // only if something was read or closed since the last time.
            let (clock, in_use) = {
                let c = self.shared.lock();
                (c.clock, c.in_use)
            };
            let quiet = clock == seen;
            if !quiet {
                seen = clock;
                freed = true;
            }
            if freed && (quiet || in_use == 0) {
                freed = false;
                crate::memory::release();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.shared.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Handles (in use, idle) and the budget bytes they hold.
    pub fn usage(&self) -> (usize, usize, usize) {
        let c = self.shared.lock();
        (c.in_use, c.idle, c.reserved)
    }
}

/// A repository opened for one call's reads outside the daemon's cache (the workers' point lookups), with
/// the same isolation as every other handle.
pub fn open_uncached(path: &Path) -> Result<gix::Repository, OdbError> {
    gix::open_opts(path, options()).map_err(|e| OdbError::Open(e.to_string()))
}

/// The raw header line `field` (e.g. `author`) of a commit, as written; None when there is no such commit.
pub fn commit_header(repo: &gix::Repository, id: ObjectId, field: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    let Some((gix::object::Kind::Commit, data)) = read(repo, id)? else { return Ok(None) };
    let mut prefix = field.to_vec();
    prefix.push(b' ');
    let headers = data.split(|b| *b == b'\n').take_while(|l| !l.is_empty());
    Ok(headers.filter_map(|l| l.strip_prefix(prefix.as_slice())).next().map(<[u8]>::to_vec))
}

/// A commit's message exactly as stored (after the headers and the blank line); None when there is no such
/// commit.
pub fn commit_message(repo: &gix::Repository, id: ObjectId) -> Result<Option<Vec<u8>>, Status> {
    let Some((gix::object::Kind::Commit, data)) = read(repo, id)? else { return Ok(None) };
    Ok(Some(data.windows(2).position(|w| w == b"\n\n").map(|i| data[i + 2..].to_vec()).unwrap_or_default()))
}

/// Only the repository's own config is read: never the user's or the system's, and never the environment,
/// as for the git processes we run.
fn options() -> gix::open::Options {
    gix::open::Options::isolated().open_path_as_is(true).with(gix::sec::Trust::Full)
}

/// A handle whose caches may hold `reserved` bytes: a quarter for decoded objects (trees and commits read
/// again within a call), the rest for delta bases. None at all when the budget had no room. gix's buffer
/// free-list is off: it keeps every buffer it was given, whatever its size, for the handle's life.
fn new_handle(repo: &gix::ThreadSafeRepository, reserved: usize) -> gix::Repository {
    let mut r = repo.to_thread_local();
    r.set_freelist(None);
    if reserved == 0 {
        metrics::READ_UNCACHED.inc();
        r.objects.unset_pack_cache();
        r.object_cache_size(None);
    } else {
        let object = reserved / 4;
        let delta = reserved - object;
        r.object_cache_size(object);
        r.objects.set_pack_cache(move || Box::new(gix::odb::pack::cache::lru::MemoryCappedHashmap::new(delta)));
    }
    r
}

pub mod pool;

pub mod commit;
mod produce;
pub mod refs;

/// The handle type of [`open_uncached`], for callers without their own gix dependency (the workers).
pub use gix::Repository;
pub use produce::{stream, Out};
pub mod tree;
pub mod write;

use gix::ObjectId;

/// Runs a blocking read off the async threads, on the read pool.
pub async fn blocking<T, F>(f: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Status> + Send + 'static,
{
    pool::run(f).await?
}

/// Runs a point lookup (one ref, one object) right here on the async thread: it takes tens of
/// microseconds, less than handing it to another thread would, and a warm idle handle is used.
/// Anything that walks history or lists refs goes through [`blocking`] instead.
pub fn inline<T>(f: impl FnOnce() -> Result<T, Status>) -> Result<T, Status> {
    f()
}

/// Whether resolving `revision` is a point lookup (an object id or a ref name): then it may run
/// [`inline`]. Navigation (`^`, `~`, `@{…}`, `^{/regex}`) can walk history and goes to [`blocking`].
pub fn is_point_lookup(revision: &[u8]) -> bool {
    !revision.iter().any(|b| b"^~@{:".contains(b))
}

/// What `git cat-file --batch` would find for `revision`: any rev-parse failure is "missing", as there.
pub fn resolve(repo: &gix::Repository, revision: &[u8]) -> Option<ObjectId> {
    use gix::bstr::ByteSlice;
    // A full object id is taken as one (as git does), without the prefix search rev-parse would start with.
    if revision.len() == 40 {
        if let Ok(id) = ObjectId::from_hex(revision) {
            return repo.has_object(id).then_some(id);
        }
    }
    repo.rev_parse_single(revision.as_bstr()).ok().map(|id| id.detach())
}

/// `revision^{commit}`.
pub fn resolve_commit(repo: &gix::Repository, revision: &[u8]) -> Option<ObjectId> {
    let id = resolve(repo, revision)?;
    let object = repo.find_object(id).ok()?;
    object.peel_to_commit().ok().map(|c| c.id)
}

/// The bytes of the object with this hex id; `None` when it does not exist.
pub fn read_hex(repo: &gix::Repository, hex: &str) -> Result<Option<Vec<u8>>, Status> {
    let Ok(id) = ObjectId::from_hex(hex.as_bytes()) else { return Ok(None) };
    Ok(read(repo, id)?.map(|(_, data)| data))
}

/// The object's kind and size, without reading its data; `None` when it does not exist.
pub fn header(repo: &gix::Repository, id: ObjectId) -> Result<Option<(gix::object::Kind, u64)>, Status> {
    match repo.try_find_header(id) {
        Ok(Some(h)) => Ok(Some((h.kind(), h.size()))),
        Ok(None) => Ok(None),
        Err(e) => Err(Status::internal(format!("read object {id}: {e}"))),
    }
}

/// The raw bytes and kind of an object; `None` when it does not exist.
pub fn read(repo: &gix::Repository, id: ObjectId) -> Result<Option<(gix::object::Kind, Vec<u8>)>, Status> {
    match repo.try_find_object(id) {
        Ok(Some(o)) => Ok(Some((o.kind, o.detach().data))),
        Ok(None) => Ok(None),
        Err(e) => Err(Status::internal(format!("read object {id}: {e}"))),
    }
}

/// The data of blob `id` cut to `limit` bytes, read only when there is something to send: the header
/// (kind, size) is checked first, so a metadata-only request never loads a large blob.
pub fn blob_prefix(repo: &gix::Repository, id: ObjectId, size: u64, limit: u64) -> Result<Vec<u8>, Status> {
    if limit == 0 || size == 0 {
        return Ok(Vec::new());
    }
    let Some((_, mut data)) = read(repo, id)? else { return Err(Status::internal(format!("object not found: {id}"))) };
    data.truncate(limit.min(size) as usize);
    Ok(data)
}

/// The `GitCommit` for `revision^{commit}`; `None` when it does not resolve to a commit.
pub fn find_commit(repo: &gix::Repository, revision: &[u8]) -> Result<Option<crate::proto::gitaly::GitCommit>, Status> {
    // One read: the peeled commit's own bytes are parsed (no second lookup by id).
    let Some(id) = resolve(repo, revision) else { return Ok(None) };
    let Ok(object) = repo.find_object(id) else { return Ok(None) };
    let Ok(commit) = object.peel_to_commit() else { return Ok(None) };
    Ok(Some(commit::parse_commit(&commit.id.to_string(), &commit.data)))
}

/// The `GitCommit` for a commit id; `None` when there is no such commit.
pub fn read_commit(repo: &gix::Repository, id: ObjectId) -> Result<Option<crate::proto::gitaly::GitCommit>, Status> {
    match read(repo, id)? {
        Some((gix::object::Kind::Commit, data)) => Ok(Some(commit::parse_commit(&id.to_string(), &data))),
        _ => Ok(None),
    }
}

/// Whether `ancestor` is reachable from `child` (a commit is its own ancestor). Revisions that do not
/// resolve to commits are not ancestors.
pub fn is_ancestor(repo: &gix::Repository, ancestor: &[u8], child: &[u8]) -> bool {
    let (Some(a), Some(c)) = (resolve_commit(repo, ancestor), resolve_commit(repo, child)) else { return false };
    if a == c {
        return true;
    }
    // If `a` is an ancestor of `c` it is their only best common ancestor.
    matches!(repo.merge_base(a, c), Ok(Some(base)) if base.detach() == a)
}

/// How many nested tags upstream follows to find a tag's commit.
const MAX_TAG_DEPTH: usize = 10;

/// The `Tag` for tag object `id` named `name` (without `refs/tags/`), with its target commit peeled
/// through nested tags; `None` when `id` is not a tag object.
pub fn read_tag(
    repo: &gix::Repository,
    id: ObjectId,
    name: &[u8],
    trim: bool,
) -> Result<Option<crate::proto::gitaly::Tag>, Status> {
    let Some((gix::object::Kind::Tag, raw)) = read(repo, id)? else { return Ok(None) };
    let mut parsed = commit::parse_tag(&id.to_string(), name, &raw, trim, trim);
    let mut depth = 0;
    while parsed.kind == b"tag" && depth < MAX_TAG_DEPTH {
        let Ok(next) = ObjectId::from_hex(parsed.object.as_bytes()) else { break };
        let Some((gix::object::Kind::Tag, raw)) = read(repo, next)? else { break };
        let inner = commit::parse_tag(&parsed.object, name, &raw, trim, trim);
        parsed.object = inner.object;
        parsed.kind = inner.kind;
        depth += 1;
    }
    if parsed.kind == b"commit" {
        let target = ObjectId::from_hex(parsed.object.as_bytes()).map_err(|e| Status::internal(e.to_string()))?;
        parsed.tag.target_commit =
            Some(read_commit(repo, target)?.ok_or_else(|| {
                Status::internal("buildAnnotatedTag error when getting target commit: object not found")
            })?);
    }
    Ok(Some(parsed.tag))
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("git")
            .args(["init", "--quiet", "--bare"])
            .arg(dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .status()
            .unwrap()
            .success();
        assert!(ok);
        dir
    }

    fn cache(max_handles: usize, idle_timeout: Duration) -> RepoCache {
        RepoCache::new(Limits { max_bytes: max_handles << 20, handle_bytes: 1 << 20, idle_timeout, max_idle: 3 })
    }

    /// Handles take caches from the budget while it has room and none after; coming back they stay warm
    /// and are reused, and the budget never holds more than its size.
    #[test]
    fn handles_share_one_budget() {
        let dir = repo();
        let c = cache(2, Duration::from_secs(60));
        let a = c.open(dir.path()).unwrap();
        let b = c.open(dir.path()).unwrap();
        let d = c.open(dir.path()).unwrap();
        assert_eq!((a.reserved, b.reserved, d.reserved), (1 << 20, 1 << 20, 0));
        assert_eq!(c.usage(), (3, 0, 2 << 20));
        drop((a, b, d));
        // The uncached one is closed; the two warm ones wait for reuse.
        assert_eq!(c.usage(), (0, 2, 2 << 20));
        let again = c.open(dir.path()).unwrap();
        assert_eq!(again.reserved, 1 << 20);
        assert_eq!(c.usage(), (1, 1, 2 << 20));
    }

    /// A handle that needs the budget takes it from the longest-idle handle of another repository, and no
    /// more are kept idle than the configured count.
    #[test]
    fn idle_handles_give_their_budget_up() {
        let (one, two) = (repo(), repo());
        let c = cache(1, Duration::from_secs(60));
        drop(c.open(one.path()).unwrap());
        assert_eq!(c.usage(), (0, 1, 1 << 20));
        let h = c.open(two.path()).unwrap();
        assert_eq!(h.reserved, 1 << 20, "the idle handle's cache was not given up");
        assert_eq!(c.usage(), (1, 0, 1 << 20));
        drop(h);

        let c = RepoCache::new(Limits {
            max_bytes: 8 << 20,
            handle_bytes: 1 << 20,
            idle_timeout: Duration::from_secs(60),
            max_idle: 2,
        });
        let hs: Vec<_> = (0..4).map(|_| c.open(one.path()).unwrap()).collect();
        drop(hs);
        assert_eq!(c.usage(), (0, 2, 2 << 20));
    }

    /// Past the idle timeout, handles and then repositories are closed and the budget is all free again; a
    /// repository whose packs changed is reopened and its old handles are not kept.
    #[test]
    fn idle_and_changed_repositories_are_closed() {
        let dir = repo();
        let c = cache(4, Duration::ZERO);
        let old = c.open(dir.path()).unwrap();
        drop(c.open(dir.path()).unwrap());
        assert_eq!(c.len(), 1);
        // A new pack changes the stamp: the next open reopens, and the old handle is closed when it returns.
        std::fs::write(dir.path().join("objects/pack/pack-test.keep"), "").unwrap();
        let new = c.open(dir.path()).unwrap();
        assert_ne!(new.generation, old.generation);
        drop(old);
        drop(new);
        assert_eq!(c.usage(), (0, 1, 1 << 20));
        c.sweep();
        assert_eq!(c.usage(), (0, 0, 0));
        assert!(c.is_empty());
    }
}
