//! In-process reads of objects, refs and history with gitoxide (`gix`), so the hot read RPCs fork nothing.
//!
//! Opening a repository costs far more than a lookup in it (config, the pack index list), so open handles
//! are kept in a bounded cache keyed by the locator's absolute path. A handle is reopened when the
//! repository's packs or packed refs change on disk (a repack, `git gc`, `pack-refs`), which a long-lived
//! handle might otherwise not see; loose refs and loose objects are read fresh by gix on every lookup.
//!
//! Paths come only from the [`crate::locator::Locator`]; nothing here joins client input onto a path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use tonic::Status;

/// How many repositories stay open. Each handle holds its pack index maps (mmaps), not the packs' data.
const CAPACITY: usize = 256;
/// Object cache per thread-local handle, for trees and commits read repeatedly within one call.
const OBJECT_CACHE: usize = 4 << 20;

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

/// What the packs and packed refs looked like when a handle was opened.
type Stamp = [Option<(SystemTime, u64)>; 2];

fn stamp(git_dir: &Path) -> Stamp {
    let s = |p: PathBuf| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
    [s(git_dir.join("objects/pack")), s(git_dir.join("packed-refs"))]
}

struct Entry {
    repo: gix::ThreadSafeRepository,
    stamp: Stamp,
    /// Changes when the handle is reopened, so threads drop their copies of the old one.
    generation: u64,
    used: u64,
}

/// Open repositories by absolute path, least recently used dropped first.
#[derive(Default)]
pub struct RepoCache {
    inner: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<PathBuf, Entry>,
    clock: u64,
    generations: u64,
}

impl std::fmt::Debug for RepoCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoCache").finish_non_exhaustive()
    }
}

/// Thread-local handles kept per thread that used them (runtime and blocking-pool threads are reused),
/// so a repeated read finds its pack and object caches warm instead of starting cold each call.
const PER_THREAD: usize = 16;

/// Every this many opens a thread drops its handles to repositories that were reopened or evicted, so a
/// handle (and the packs it maps, deleted by a repack) does not outlive its use.
const SWEEP_EVERY: u32 = 64;

thread_local! {
    static LOCAL: std::cell::RefCell<HashMap<PathBuf, (u64, gix::Repository)>> = Default::default();
    static OPENS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// A repository handle for this thread; goes back to the thread's cache when dropped.
pub struct Handle {
    repo: Option<gix::Repository>,
    path: PathBuf,
    generation: u64,
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
        let generation = self.generation;
        let _ = LOCAL.try_with(|local| {
            let mut local = local.borrow_mut();
            if local.len() >= PER_THREAD && !local.contains_key(&path) {
                if let Some(k) = local.keys().next().cloned() {
                    local.remove(&k);
                }
            }
            local.insert(path, (generation, repo));
        });
    }
}

impl RepoCache {
    /// A handle for the repository at `path` (already resolved by the locator), for this thread.
    pub fn open(&self, path: &Path) -> Result<Handle, OdbError> {
        let now = stamp(path);
        let shared = {
            let mut cache = self.inner.lock().expect("not poisoned");
            if OPENS.with(|n| {
                n.set(n.get().wrapping_add(1));
                n.get() % SWEEP_EVERY == 0
            }) {
                LOCAL.with(|l| {
                    l.borrow_mut().retain(|p, (g, _)| cache.entries.get(p).is_some_and(|e| e.generation == *g))
                });
            }
            cache.clock += 1;
            let clock = cache.clock;
            match cache.entries.get_mut(path) {
                Some(e) if e.stamp == now => {
                    e.used = clock;
                    Some((e.generation, e.repo.clone()))
                }
                _ => None,
            }
        };
        let (generation, shared) = match shared {
            Some(s) => s,
            None => self.reopen(path, now)?,
        };
        let local = LOCAL.with(|l| l.borrow_mut().remove(path)).filter(|(g, _)| *g == generation).map(|(_, r)| r);
        let repo = local.unwrap_or_else(|| thread_local(&shared));
        Ok(Handle { repo: Some(repo), path: path.to_path_buf(), generation })
    }

    /// Opens `path` afresh (outside the lock: a slow open does not hold up other repositories) and records it.
    fn reopen(&self, path: &Path, now: Stamp) -> Result<(u64, gix::ThreadSafeRepository), OdbError> {
        let repo = gix::open_opts(path, options()).map_err(|e| OdbError::Open(e.to_string()))?.into_sync();
        let mut cache = self.inner.lock().expect("not poisoned");
        if cache.entries.len() >= CAPACITY && !cache.entries.contains_key(path) {
            if let Some(oldest) = cache.entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone()) {
                cache.entries.remove(&oldest);
            }
        }
        cache.generations += 1;
        let (generation, used) = (cache.generations, cache.clock);
        cache.entries.insert(path.to_path_buf(), Entry { repo: repo.clone(), stamp: now, generation, used });
        Ok((generation, repo))
    }

    /// Forgets the handle for `path`, after the repository was removed or rewritten under us.
    pub fn forget(&self, path: &Path) {
        self.inner.lock().expect("not poisoned").entries.remove(path);
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("not poisoned").entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Only the repository's own config is read: never the user's or the system's, and never the environment,
/// as for the git processes we run.
fn options() -> gix::open::Options {
    gix::open::Options::isolated()
        .open_path_as_is(true)
        .with(gix::sec::Trust::Full)
        // A bounded delta-base cache per handle (gix's default is much larger), as handles live per thread.
        .config_overrides(["core.deltaBaseCacheLimit=16m"])
}

fn thread_local(repo: &gix::ThreadSafeRepository) -> gix::Repository {
    let mut r = repo.to_thread_local();
    r.object_cache_size_if_unset(OBJECT_CACHE);
    r
}

pub mod commit;
mod produce;
pub mod refs;

pub use produce::{stream, Out};
pub mod tree;

use gix::ObjectId;

/// Runs a blocking read off the async threads.
pub async fn blocking<T, F>(f: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Status> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| Status::internal(format!("read task: {e}")))?
}

/// Runs a point lookup (one ref, one object) right here on the async thread: it takes tens of
/// microseconds, less than handing it to another thread would, and the thread's warm handle cache is used.
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
