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

    /// The page a title in a directory names (see `gollum::lookup_query`).
    pub fn find(&self, odb: &rgitaly::odb::Repository, query: &str) -> Result<Option<&Page>, Status> {
        Ok(self.files(odb)?.iter().find(|p| gollum::matches(query, &p.path)))
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
pub async fn commit_change<T>(
    git: &GitCmdFactory,
    t: &Target,
    details: &WikiCommitDetails,
    plan: impl Fn(&rgitaly::odb::Repository, Option<&Snapshot>) -> Result<Plan<T>, Status>,
) -> Result<Option<T>, Status> {
    // Writes to one wiki take turns: each would otherwise mostly lose the race to the others and plan
    // again. In this worker through a lock per repository, across workers through `flock` on the
    // repository's directory (released by the kernel if a worker dies); a writer outside rgitaly (a push)
    // is caught by the compare-and-swap.
    let turn = repository_lock(&t.repo);
    let mut held = Some((turn.lock().await, DirLock::exclusive(&t.repo).await?));
    let repo = Repo::new(git, &t.repo);
    let now = super::unix_time(None)?;
    let sig = Signature::new(&details.name, &details.email, now)
        .map_err(|_| Status::invalid_argument("empty CommitDetails.Name or CommitDetails.Email"))?;
    for _ in 0..WRITE_ATTEMPTS {
        let mut written = rgitaly::odb::write::Unsynced::default();
        let (tip, commit) = {
            let odb = crate::service::open(&t.repo)?;
            let tip = Snapshot::tip(&odb)?;
            let edits = match plan(&odb, tip.as_ref())? {
                Plan::Answer(a) => return Ok(Some(a)),
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
            (tip.clone(), rgitaly::odb::write::commit_unsynced(&odb, &bytes, &mut written)?)
        };
        // The tree and commit are synced while the pre-receive and update hooks run; the branch moves after.
        let syncing = tokio::task::spawn_blocking(move || written.sync());
        let durable = async { syncing.await.map_err(internal)? };
        let new_old = (commit.as_str(), tip.as_deref().unwrap_or(ZERO_OID));
        let (hooked, post) = super::update_before_post_receive(t, &repo, WIKI_REF, new_old, &[], durable).await?;
        match hooked {
            Hooked::Done => {
                // The branch has moved: the next write may go on while GitLab hears of this one.
                held.take();
                return match super::post_receive(post).await? {
                    Hooked::Refused(message) => Err(Status::failed_precondition(format!("Hook failed: {message}"))),
                    _ => Ok(None),
                };
            }
            Hooked::Refused(message) => return Err(Status::failed_precondition(format!("Hook failed: {message}"))),
            // Planned again only when another write really moved the branch (not for a stale lock).
            Hooked::Raced => {
                let odb = crate::service::open(&t.repo)?;
                let now = rgitaly::odb::refs::commit(&odb, WIKI_REF.as_bytes())?.map(|id| id.to_string());
                if now == tip {
                    return Err(super::could_not_update("master"));
                }
            }
        }
    }
    Err(super::could_not_update("master"))
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

/// The lock for writes to the wiki at `path`, shared by this worker's calls while any holds it.
fn repository_lock(path: &std::path::Path) -> Arc<tokio::sync::Mutex<()>> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock, Weak};
    static LOCKS: OnceLock<Mutex<HashMap<std::path::PathBuf, Weak<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    locks.retain(|_, lock| lock.strong_count() > 0);
    if let Some(lock) = locks.get(path).and_then(Weak::upgrade) {
        return lock;
    }
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    locks.insert(path.to_path_buf(), Arc::downgrade(&lock));
    lock
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
