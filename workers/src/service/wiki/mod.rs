//! WikiService as the worker serves it: a GitLab wiki is a repository whose `master` branch holds one file
//! per page, laid out by gollum's rules (`gollum`). Reads list and look up pages in-process; writes build
//! one commit on the branch tip, authored by the request's commit details, and move the branch through the
//! hook chain as the user `user-<user_id>`, as upstream's Ruby code (gollum's committer through
//! OperationService) does.
//!
//! A wiki write names no expected old tip: it applies to whatever the wiki holds. When another write
//! moves the branch first, the change is planned again on the new tip (the page checks included) rather
//! than failing as upstream does, so concurrent editors of one wiki lose nothing and see no spurious error.

mod delete_page;
mod find_page;
mod gollum;
mod list_pages;
mod page_versions;
mod update_page;
mod write_page;

use std::sync::Arc;

use rgitaly::git::repo::{commit_bytes, Repo, Signature, ZERO_OID};
use rgitaly::git::GitCmdFactory;
use rgitaly::odb::write::{EditError, TreeChange};
use rgitaly::proto::gitaly::wiki_service_server::WikiService;
use rgitaly::proto::gitaly::*;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::{internal, target, Hooked, Target};
use crate::hooks::Swap;

/// The branch gollum reads and writes (GitLab configures no other).
pub const WIKI_REF: &str = "refs/heads/master";

/// How many times a write is planned again after losing the branch to a concurrent write.
const WRITE_ATTEMPTS: usize = 8;

/// Upstream's chunk size for page data in responses.
use rgitaly::service::chunk::DATA_CHUNK as CHUNK;

/// The most page content one write may send: a bound on what a client can make the worker hold.
const MAX_CONTENT: usize = 64 << 20;

pub struct Wiki {
    git: Arc<GitCmdFactory>,
}

impl Wiki {
    pub fn new(git: Arc<GitCmdFactory>) -> Self {
        Wiki { git }
    }
}

/// A page file in a wiki tree.
#[derive(Debug, Clone)]
pub struct Page {
    pub path: Vec<u8>,
    pub blob: String,
    pub format: &'static str,
}

impl Page {
    fn filename(&self) -> &[u8] {
        gollum::split_path(&self.path).1
    }

    /// The page's metadata as upstream sends it, at `version` (the commit it was read from).
    fn proto(&self, version: &GitCommit, historical: bool) -> WikiPage {
        let title = gollum::title_of(self.filename());
        WikiPage {
            version: Some(WikiPageVersion { commit: Some(version.clone()), format: self.format.to_string() }),
            format: self.format.to_string(),
            title: title.clone(),
            url_path: gollum::url_path(&self.path),
            path: self.path.clone(),
            name: title,
            historical,
            raw_data: Vec::new(),
        }
    }
}

/// A wiki as of one commit. Its files are listed on first use: a write that only checks one directory
/// never walks the whole tree.
pub struct Snapshot {
    pub commit: String,
    files: std::cell::OnceCell<Vec<Page>>,
}

impl Snapshot {
    /// The wiki at `revision` (a commit), None when it does not resolve to one.
    pub fn at(odb: &rgitaly::odb::Repository, revision: &[u8]) -> Result<Option<Snapshot>, Status> {
        let Some(commit) = rgitaly::odb::resolve_commit(odb, revision) else { return Ok(None) };
        Ok(Some(Snapshot { commit: commit.to_string(), files: Default::default() }))
    }

    /// The wiki on its branch; None when the branch does not exist (an empty wiki).
    pub fn tip(odb: &rgitaly::odb::Repository) -> Result<Option<Snapshot>, Status> {
        match rgitaly::odb::refs::commit(odb, WIKI_REF.as_bytes())? {
            Some(id) => Ok(Some(Snapshot { commit: id.to_string(), files: Default::default() })),
            None => Ok(None),
        }
    }

    /// Every file gollum tries when looking a title up, in git's tree order (depth first).
    pub fn files(&self, odb: &rgitaly::odb::Repository) -> Result<&[Page], Status> {
        if let Some(files) = self.files.get() {
            return Ok(files);
        }
        let found = rgitaly::odb::tree::files(odb, &self.commit, |name| gollum::format_of(name).is_some())?;
        let files = found
            .into_iter()
            .filter_map(|(path, blob)| {
                let format = gollum::format_of(gollum::split_path(&path).1)?;
                Some(Page { path, blob, format })
            })
            .collect();
        Ok(self.files.get_or_init(|| files))
    }

    /// The page a title in a directory names (see `gollum::lookup_query`): the first match in tree order,
    /// read from the listing when the wiki has been listed, else by a walk of only the directories the
    /// page may be in (a lookup of a page at the root reads the root tree alone).
    pub fn find(&self, odb: &rgitaly::odb::Repository, query: &str) -> Result<Option<Page>, Status> {
        let lookup = gollum::Lookup::new(query);
        if let Some(files) = self.files.get() {
            return Ok(files.iter().find(|p| lookup.matches(&p.path)).cloned());
        }
        rgitaly::odb::tree::walk_files(
            odb,
            &self.commit,
            |dir| lookup.may_be_under(dir),
            |path, name, oid| match gollum::format_of(name) {
                Some(format) if lookup.matches(path) => {
                    std::ops::ControlFlow::Break(Page { path: path.to_vec(), blob: oid.to_string(), format })
                }
                _ => std::ops::ControlFlow::Continue(()),
            },
        )
    }

    /// The pages gollum lists, in tree order.
    pub fn listed(&self, odb: &rgitaly::odb::Repository) -> Result<impl Iterator<Item = &Page>, Status> {
        Ok(self.files(odb)?.iter().filter(|p| gollum::is_listed(p.filename())))
    }

    pub fn version(&self, odb: &rgitaly::odb::Repository) -> Result<GitCommit, Status> {
        let id = rgitaly::odb::resolve(odb, self.commit.as_bytes())
            .ok_or_else(|| Status::internal(format!("commit {} vanished", self.commit)))?;
        rgitaly::odb::read_commit(odb, id)?.ok_or_else(|| Status::internal(format!("commit {} vanished", self.commit)))
    }
}

/// Reads a page's text as upstream returns it.
pub fn page_text(odb: &rgitaly::odb::Repository, page: &Page) -> Result<Vec<u8>, Status> {
    let data = rgitaly::odb::read_hex(odb, &page.blob)?
        .ok_or_else(|| Status::internal(format!("blob {} vanished", page.blob)))?;
    Ok(gollum::text_data(data))
}

/// Upstream's checks of a write's commit details (after the RPC's own).
pub fn validate_details(rpc: &str, details: Option<&WikiCommitDetails>) -> Result<(), Status> {
    let problem = match details {
        None => "empty CommitDetails",
        Some(d) if d.name.is_empty() => "empty CommitDetails.Name",
        Some(d) if d.email.is_empty() => "empty CommitDetails.Email",
        Some(d) if d.message.is_empty() => "empty CommitDetails.Message",
        Some(_) => return Ok(()),
    };
    Err(Status::invalid_argument(format!("{rpc}: {problem}")))
}

/// One change to the wiki's tree: a path set to a blob, or removed.
pub struct Edit {
    pub path: Vec<u8>,
    pub blob: Option<String>,
}

/// What a write planned on a tip comes to: edits to commit, or an answer without a commit.
pub enum Plan<T> {
    Commit(Vec<Edit>),
    Answer(T),
}

/// Commits a change planned by `plan` on the branch tip (None: an empty wiki) and moves the branch through
/// the hook chain; planned again on the new tip when another write moved the branch meanwhile.
/// Ok(None) once committed, Ok(Some(answer)) when the plan answered instead.
///
/// Writes to one wiki take turns to plan (each would otherwise mostly lose the race to the others and plan
/// again), but only to plan: a write plans on the commit of the write before it while that one is still
/// running its hooks and syncing, and swaps the branch from that commit once it has landed. So the hooks,
/// syncs and swaps of successive writes overlap, and what is serial is the planning and the swaps alone;
/// and one swap lands every write ready behind it (hooks passed, objects synced), so that swaps, each
/// with its lock file's fsync, do not bound how many writes land.
/// If the write before does not land (a hook refused it, its client went away), the swap fails and the
/// change is planned again on what the branch holds; an answer given without a commit (a duplicate page, a
/// page not found) waits for the commit it was read from to land, so no answer rests on a write that
/// never happened. A writer outside rgitaly (a push) is caught by the compare-and-swap.
pub async fn commit_change<T>(
    git: &Arc<GitCmdFactory>,
    t: &Target,
    details: &WikiCommitDetails,
    plan: impl Fn(&rgitaly::odb::Repository, Option<&Snapshot>) -> Result<Plan<T>, Status>,
) -> Result<Option<T>, Status> {
    let writes = repository_writes(&t.repo);
    let now = super::unix_time(None)?;
    let sig = Signature::new(&details.name, &details.email, now)
        .map_err(|_| Status::invalid_argument("empty CommitDetails.Name or CommitDetails.Email"))?;
    // Planning again because the write built on did not land is not counted: each such time another
    // write has ended.
    let mut raced = 0;
    while raced < WRITE_ATTEMPTS {
        let mut hold = writes.planning.lock().await;
        let flock = writes.join(&mut hold, &t.repo).await?;
        // The write before this one, while it may still land: this one builds on its commit.
        let before = writes.newest().as_ref().and_then(Pending::base);
        let mut written = rgitaly::odb::write::Unsynced::default();
        let planned = (|| -> Result<Result<(Option<String>, String), T>, Status> {
            let odb = crate::service::open(&t.repo)?;
            let tip = match &before {
                Some(p) => Some(Snapshot { commit: p.0.commit.clone(), files: Default::default() }),
                None => Snapshot::tip(&odb)?,
            };
            let edits = match plan(&odb, tip.as_ref())? {
                Plan::Answer(a) => return Ok(Err(a)),
                Plan::Commit(edits) => edits,
            };
            let tip = tip.map(|s| s.commit);
            let base = match &tip {
                Some(c) => Some(
                    rgitaly::odb::tree::root_tree(&odb, c)
                        .ok_or_else(|| Status::internal(format!("no tree for {c}")))?
                        .to_string(),
                ),
                None => None,
            };
            let changes: Vec<TreeChange<'_>> =
                edits.iter().map(|e| TreeChange { path: &e.path, blob: e.blob.as_deref() }).collect();
            let tree = rgitaly::odb::write::edit_tree_unsynced(&odb, base.as_deref(), &changes, &mut written);
            let tree = tree.map_err(|e| match e {
                EditError::InvalidPath(_) => Status::invalid_argument(e.to_string()),
                EditError::InTheWay(_) => Status::failed_precondition(e.to_string()),
                EditError::Other(s) => s,
            })?;
            let parents: Vec<&str> = tip.as_deref().into_iter().collect();
            let bytes = commit_bytes(&tree, &parents, sig.line().as_bytes(), &sig, &details.message);
            Ok(Ok((tip, rgitaly::odb::write::commit_unsynced(&odb, &bytes, &mut written)?)))
        })();
        let (tip, commit) = match planned {
            Ok(Ok(commit)) => commit,
            // An answer or a refusal read from a commit not yet landed holds only once it has.
            answer => {
                drop(hold);
                if let Some(before) = before {
                    if !before.settled().await {
                        continue;
                    }
                }
                return answer.map(Result::err);
            }
        };
        let outcome = Outcome::new(commit.clone(), before.clone());
        writes.set_newest(Some(outcome.0.clone()));
        drop(hold);
        let landing =
            land(writes.clone(), git.clone(), t.clone(), outcome, flock, written, (commit.clone(), tip.clone()));
        match tokio::spawn(landing).await.map_err(internal)?? {
            Hooked::Done => return Ok(None),
            Hooked::Refused(message) => return Err(Status::failed_precondition(format!("Hook failed: {message}"))),
            // Planned again only when the branch is not where this write found it: another write moved it,
            // or the write this one built on did not land (not for a stale lock).
            Hooked::Raced => {
                let odb = crate::service::open(&t.repo)?;
                let now = rgitaly::odb::refs::commit(&odb, WIKI_REF.as_bytes())?.map(|id| id.to_string());
                // A swap made for a write before this one may have landed it without that write learning
                // so (its call to the daemon failed after the daemon had it): then it is not made twice.
                if now.as_ref().is_some_and(|now| rgitaly::odb::is_ancestor(&odb, commit.as_bytes(), now.as_bytes())) {
                    return Ok(None);
                }
                if let Some(before) = &before {
                    if !before.settled().await {
                        continue;
                    }
                }
                raced += 1;
                if now == tip {
                    return Err(super::could_not_update("master"));
                }
            }
        }
    }
    Err(super::could_not_update("master"))
}

/// A planned write's way onto the branch: its hooks while its tree and commit sync, its swap once the
/// write before it has landed (to the newest write ready behind it), telling the writes built on it, and
/// post-receive. It runs to its end whatever becomes of the call: writes built on it wait for its outcome,
/// and one that another write's swap has landed must hear so from that write, so no swap is left running
/// unobserved.
async fn land(
    writes: Arc<Writes>,
    git: Arc<GitCmdFactory>,
    t: Target,
    outcome: Outcome,
    flock: Arc<DirLock>,
    written: rgitaly::odb::write::Unsynced,
    (commit, tip): (String, Option<String>),
) -> Result<Hooked, Status> {
    let me = outcome.0.clone();
    let before = me.before();
    let repo = Repo::new(&git, &t.repo);
    let syncing = tokio::task::spawn_blocking(move || written.sync());
    let landing = std::sync::Mutex::new(Vec::new());
    let ready = async {
        syncing.await.map_err(internal)??;
        me.0.ready.store(true, std::sync::atomic::Ordering::SeqCst);
        let built_on_landed = match &before {
            Some(before) => before.settled().await,
            None => true,
        };
        if me.state() == Some(true) {
            return Ok(Swap::Done);
        }
        if !built_on_landed {
            return Ok(Swap::Stale);
        }
        let behind = writes.ready_behind(&me);
        let to = behind.last().map(|p| Swap::To(p.0.commit.clone())).unwrap_or(Swap::AsPlanned);
        *landing.lock().unwrap_or_else(|e| e.into_inner()) = behind;
        Ok(to)
    };
    let new_old = (commit.as_str(), tip.as_deref().unwrap_or(ZERO_OID));
    let (hooked, post) = super::update_before_post_receive(&t, &repo, WIKI_REF, new_old, &[], ready).await?;
    if let Hooked::Done = hooked {
        // The branch has moved: the next write may swap, and this worker may let other workers write,
        // while GitLab hears of this one. The writes this swap landed too are told first (newest first), so
        // that each learns it has landed before it learns the write it was built on has.
        for p in landing.into_inner().unwrap_or_else(|e| e.into_inner()).iter().rev() {
            p.land();
        }
        outcome.landed();
        drop(flock);
        return super::post_receive(post).await;
    }
    Ok(hooked)
}

/// How many writes one hold of a wiki's directory lock admits before this worker lets it go, so that
/// writes waiting in another worker (one the pool no longer sends writes to, another daemon's) get their
/// turn under a steady stream of writes here.
const WRITES_PER_HOLD: usize = 64;

/// One worker's writes to one wiki: the lock they plan under, and what they build on.
#[derive(Default)]
struct Writes {
    planning: tokio::sync::Mutex<Hold>,
    /// The last write planned here.
    newest: std::sync::Mutex<Option<Pending>>,
}

/// This worker's `flock` on the repository, while any of its writes holds it, and how many writes it has
/// admitted.
#[derive(Default)]
struct Hold {
    flock: std::sync::Weak<DirLock>,
    admitted: usize,
}

impl Writes {
    fn newest(&self) -> Option<Pending> {
        self.newest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_newest(&self, newest: Option<Pending>) {
        *self.newest.lock().unwrap_or_else(|e| e.into_inner()) = newest;
    }

    /// A share of this worker's `flock` on `repo` (across workers, writes to one wiki take turns), taken
    /// anew when no write here holds it or when it has admitted its share of writes. Taking it anew waits
    /// for every write under the old one to end, so nothing is pending then.
    async fn join(&self, hold: &mut Hold, repo: &std::path::Path) -> Result<Arc<DirLock>, Status> {
        if let Some(flock) = hold.flock.upgrade().filter(|_| hold.admitted < WRITES_PER_HOLD) {
            hold.admitted += 1;
            return Ok(flock);
        }
        let flock = Arc::new(DirLock::exclusive(repo).await?);
        hold.flock = Arc::downgrade(&flock);
        hold.admitted = 1;
        self.set_newest(None);
        Ok(flock)
    }

    /// The writes built on `me`, oldest first, that are ready to land with it: up to the first that is
    /// not (still running its hooks or its syncs, or ended). Only those on the way back from the newest
    /// write are seen, which after a failure may not be all of them; the others swap for themselves.
    fn ready_behind(&self, me: &Pending) -> Vec<Pending> {
        let mut path = Vec::new();
        let mut at = self.newest();
        while let Some(p) = at {
            if Arc::ptr_eq(&p.0, &me.0) {
                path.reverse();
                let ready = path.iter().take_while(|p: &&Pending| {
                    p.0.ready.load(std::sync::atomic::Ordering::SeqCst) && p.state().is_none()
                });
                return ready.cloned().collect();
            }
            at = p.before();
            path.push(p);
        }
        Vec::new()
    }
}

/// A write planned on the wiki, linked to the write it was built on until it lands.
#[derive(Clone)]
struct Pending(Arc<Link>);

struct Link {
    commit: String,
    /// None while it runs; then whether the branch moved to `commit` (or past it).
    landed: tokio::sync::watch::Sender<Option<bool>>,
    /// Its hooks have passed and its objects are synced: a swap made for a write before it may land it.
    ready: std::sync::atomic::AtomicBool,
    /// The write whose commit is the parent of this one's, while this one has not landed.
    before: std::sync::Mutex<Option<Pending>>,
}

impl Pending {
    fn state(&self) -> Option<bool> {
        *self.0.landed.borrow()
    }

    fn before(&self) -> Option<Pending> {
        self.0.before.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The newest write from this one back that may still land, for a new write to build on; None when
    /// the new write builds on what the branch holds. A write built on one that failed cannot land, so
    /// the walk back forgets every write newer than a failed one; it stops at one that landed.
    fn base(&self) -> Option<Pending> {
        let mut best = None;
        let mut at = Some(self.clone());
        while let Some(p) = at {
            match p.state() {
                Some(true) => break,
                Some(false) => best = None,
                None if best.is_none() => best = Some(p.clone()),
                None => {}
            }
            at = p.before();
        }
        best
    }

    /// Waits for the write to end: whether it landed.
    async fn settled(&self) -> bool {
        let mut landed = self.0.landed.subscribe();
        let settled = landed.wait_for(Option::is_some).await.map(|v| *v == Some(true));
        settled.unwrap_or(false)
    }

    /// Says the branch has moved to this write's commit or past it.
    fn land(&self) {
        self.0.landed.send_replace(Some(true));
        // What it was built on matters no more.
        self.0.before.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// A write's outcome for the writes built on it: not landed unless said otherwise before it is dropped
/// (a refusal, an error, a cancelled call).
struct Outcome(Pending);

impl Outcome {
    fn new(commit: String, before: Option<Pending>) -> Self {
        Outcome(Pending(Arc::new(Link {
            commit,
            landed: tokio::sync::watch::channel(None).0,
            ready: Default::default(),
            before: std::sync::Mutex::new(before),
        })))
    }

    fn landed(self) {
        self.0.land();
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.0 .0.landed.send_if_modified(|v| {
            let unsaid = v.is_none();
            if unsaid {
                *v = Some(false);
            }
            unsaid
        });
    }
}

/// The paths of the blobs directly in `dir` of the wiki (gollum's duplicate check looks at every file, not
/// only pages).
pub fn blobs_in(odb: &rgitaly::odb::Repository, tip: &Snapshot, dir: &[u8]) -> Result<Vec<Vec<u8>>, Status> {
    let entries = rgitaly::odb::tree::tree_entries(odb, &tip.commit, dir, false)?;
    Ok(entries.into_iter().filter(|e| e.r#type == tree_entry::EntryType::Blob as i32).map(|e| e.path).collect())
}

/// gollum's refusal of a page whose name another file in its directory already has, or None.
pub fn duplicate(
    odb: &rgitaly::odb::Repository,
    tip: &Snapshot,
    path: &[u8],
    except: Option<&[u8]>,
) -> Result<Option<String>, Status> {
    let (dir, filename) = gollum::split_path(path);
    for existing_path in blobs_in(odb, tip, dir)? {
        let existing = gollum::split_path(&existing_path).1;
        if Some(existing_path.as_slice()) != except && gollum::same_page_name(existing, filename) {
            let d = if dir.is_empty() { "/".to_string() } else { String::from_utf8_lossy(dir).into_owned() };
            return Ok(Some(format!(
                "Cannot write {d}/{}, found {d}/{}.",
                String::from_utf8_lossy(filename),
                String::from_utf8_lossy(existing)
            )));
        }
    }
    Ok(None)
}

/// This worker's writes to the wiki at `path`, shared by its calls while any holds them.
fn repository_writes(path: &std::path::Path) -> Arc<Writes> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock, Weak};
    static WRITES: OnceLock<Mutex<HashMap<std::path::PathBuf, Weak<Writes>>>> = OnceLock::new();
    let mut all = WRITES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|_, w| w.strong_count() > 0);
    if let Some(w) = all.get(path).and_then(Weak::upgrade) {
        return w;
    }
    let w = Arc::new(Writes::default());
    all.insert(path.to_path_buf(), Arc::downgrade(&w));
    w
}

/// An exclusive `flock` on a directory, held until dropped.
struct DirLock(std::fs::File);

impl DirLock {
    async fn exclusive(dir: &std::path::Path) -> Result<DirLock, Status> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(dir).map_err(internal)?;
        tokio::task::spawn_blocking(move || {
            // SAFETY: flock on a descriptor this closure owns.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc != 0 {
                return Err(internal(std::io::Error::last_os_error()));
            }
            Ok(DirLock(file))
        })
        .await
        .map_err(internal)?
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: unlocking the descriptor this value owns (closing it would release the lock too).
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Writes page content as gollum stores it (every `\r` removed) and returns the blob's id.
pub fn write_content(t: &Target, mut content: Vec<u8>) -> Result<String, Status> {
    content.retain(|b| *b != b'\r');
    let odb = crate::service::open(&t.repo)?;
    rgitaly::odb::write::blob(&odb, &content)
}

/// Reads a client-streamed write's content: the first message's and every later one's, bounded.
pub async fn read_content<M>(
    stream: &mut Streaming<M>,
    first: &M,
    content_of: impl Fn(&M) -> &[u8],
) -> Result<Vec<u8>, Status>
where
    M: Send + 'static,
    Streaming<M>: Send,
{
    let first = content_of(first).to_vec();
    super::gather(stream, first, MAX_CONTENT, "page content", |m| Some(content_of(&m).to_vec())).await
}

/// Splits page text into upstream's chunks.
pub fn chunks(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.chunks(CHUNK)
}

#[tonic::async_trait]
impl WikiService for Wiki {
    async fn wiki_get_page_versions(
        &self,
        r: Request<WikiGetPageVersionsRequest>,
    ) -> Result<Response<BoxStream<WikiGetPageVersionsResponse>>, Status> {
        let t = target(&r)?;
        page_versions::page_versions(&self.git, &t, r.into_inner()).await.map(Response::new)
    }

    async fn wiki_write_page(
        &self,
        r: Request<Streaming<WikiWritePageRequest>>,
    ) -> Result<Response<WikiWritePageResponse>, Status> {
        let t = target(&r)?;
        write_page::write_page(&self.git, &t, r.into_inner()).await.map(Response::new)
    }

    async fn wiki_update_page(
        &self,
        r: Request<Streaming<WikiUpdatePageRequest>>,
    ) -> Result<Response<WikiUpdatePageResponse>, Status> {
        let t = target(&r)?;
        update_page::update_page(&self.git, &t, r.into_inner()).await.map(Response::new)
    }

    async fn wiki_delete_page(
        &self,
        r: Request<WikiDeletePageRequest>,
    ) -> Result<Response<WikiDeletePageResponse>, Status> {
        let t = target(&r)?;
        delete_page::delete_page(&self.git, &t, r.into_inner()).await.map(Response::new)
    }

    async fn wiki_find_page(
        &self,
        r: Request<WikiFindPageRequest>,
    ) -> Result<Response<BoxStream<WikiFindPageResponse>>, Status> {
        let t = target(&r)?;
        let req = r.into_inner();
        // A walk of the whole wiki: off the worker's two async threads, which serve health checks too.
        tokio::task::spawn_blocking(move || find_page::find_page(&t, req)).await.map_err(internal)?.map(Response::new)
    }

    async fn wiki_get_all_pages(
        &self,
        r: Request<WikiGetAllPagesRequest>,
    ) -> Result<Response<BoxStream<WikiGetAllPagesResponse>>, Status> {
        let t = target(&r)?;
        list_pages::get_all_pages(&self.git, &t, r.into_inner()).await.map(Response::new)
    }

    async fn wiki_list_pages(
        &self,
        r: Request<WikiListPagesRequest>,
    ) -> Result<Response<BoxStream<WikiListPagesResponse>>, Status> {
        let t = target(&r)?;
        list_pages::list_pages(&self.git, &t, r.into_inner()).await.map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(p: &Pending) -> Option<String> {
        p.base().map(|b| b.0.commit.clone())
    }

    #[test]
    fn a_write_builds_on_the_newest_write_that_may_still_land() {
        let w0 = Outcome::new("c0".into(), None);
        let w1 = Outcome::new("c1".into(), w0.0.base());
        let w2 = Outcome::new("c2".into(), w1.0.base());
        let (p1, p2) = (w1.0.clone(), w2.0.clone());
        assert_eq!(base(&p2).as_deref(), Some("c2"));
        // w1 is refused: w2, built on it, cannot land; a new write builds on w0.
        drop(w1);
        assert_eq!(p1.state(), Some(false));
        assert_eq!(base(&p2).as_deref(), Some("c0"));
        // w0 lands: a new write builds on the branch.
        w0.landed();
        assert_eq!(base(&p2), None);
        let w3 = Outcome::new("c3".into(), None);
        let w4 = Outcome::new("c4".into(), Some(w3.0.clone()));
        let p4 = w4.0.clone();
        w4.landed();
        assert!(p4.before().is_none(), "a landed write drops its link");
        assert_eq!(base(&w3.0).as_deref(), Some("c3"));
    }

    #[test]
    fn a_swap_lands_the_writes_ready_behind_it() {
        let writes = Writes::default();
        let w0 = Outcome::new("c0".into(), None);
        let w1 = Outcome::new("c1".into(), Some(w0.0.clone()));
        let w2 = Outcome::new("c2".into(), Some(w1.0.clone()));
        let w3 = Outcome::new("c3".into(), Some(w2.0.clone()));
        writes.set_newest(Some(w3.0.clone()));
        let commits = |v: Vec<Pending>| v.iter().map(|p| p.0.commit.clone()).collect::<Vec<_>>();
        let ready = |o: &Outcome| o.0 .0.ready.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(writes.ready_behind(&w0.0).is_empty(), "none ready yet");
        ready(&w1);
        ready(&w3);
        assert_eq!(commits(writes.ready_behind(&w0.0)), ["c1"], "up to the first not ready");
        ready(&w2);
        assert_eq!(commits(writes.ready_behind(&w0.0)), ["c1", "c2", "c3"]);
        assert_eq!(commits(writes.ready_behind(&w2.0)), ["c3"]);
        // A write that ended is no longer landed by another's swap, nor is anything behind it.
        drop(w2);
        assert_eq!(commits(writes.ready_behind(&w0.0)), ["c1"]);
        // A write not on the way back from the newest has none seen behind it.
        let other = Outcome::new("x".into(), None);
        assert!(writes.ready_behind(&other.0).is_empty());
        drop((w1, w3));
    }
}
