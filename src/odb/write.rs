//! Objects written in-process: a blob, a tree edited from another, a commit from exact bytes. A wiki
//! write on a large wiki otherwise starts four git processes (hash-object, read-tree, update-index,
//! write-tree) for what is a few object writes; these are loose objects exactly as git writes them
//! (hashed first, nothing written when the object exists), and, as git does with the `core.fsync` rgitaly
//! gives it, each new object file and its directory are synced before the call goes on (or, through
//! [`Unsynced`], before the caller moves a ref): a ref moved next never points at an object a power loss
//! could take back.

use std::path::{Path, PathBuf};

use gix::bstr::BStr;
use gix::ObjectId;
use tonic::Status;

fn failed(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("write {what}: {e}"))
}

fn id(hex: &str) -> Result<ObjectId, Status> {
    ObjectId::from_hex(hex.as_bytes()).map_err(|e| Status::internal(format!("object id {hex:?}: {e}")))
}

/// Writes an object of `kind` from its exact bytes (a commit as `git::repo::commit_bytes` lays them
/// out) and returns its id.
pub fn object(repo: &gix::Repository, kind: gix::object::Kind, data: &[u8]) -> Result<String, Status> {
    put(repo, kind, data).map(|id| id.to_string())
}

/// Writes a blob and returns its id.
pub fn blob(repo: &gix::Repository, data: &[u8]) -> Result<String, Status> {
    object(repo, gix::object::Kind::Blob, data)
}

/// Writes a commit from its exact bytes and returns its id.
pub fn commit(repo: &gix::Repository, data: &[u8]) -> Result<String, Status> {
    object(repo, gix::object::Kind::Commit, data)
}

/// As [`commit`], its sync left to `written`.
pub fn commit_unsynced(repo: &gix::Repository, data: &[u8], written: &mut Unsynced) -> Result<String, Status> {
    put_unsynced(repo, gix::object::Kind::Commit, data, written).map(|id| id.to_string())
}

fn put(repo: &gix::Repository, kind: gix::object::Kind, data: &[u8]) -> Result<ObjectId, Status> {
    let mut written = Unsynced::default();
    let id = put_unsynced(repo, kind, data, &mut written)?;
    written.sync()?;
    Ok(id)
}

fn put_unsynced(
    repo: &gix::Repository,
    kind: gix::object::Kind,
    data: &[u8],
    written: &mut Unsynced,
) -> Result<ObjectId, Status> {
    let id = gix::objs::compute_hash(repo.object_hash(), kind, data).map_err(|e| failed("object", e))?;
    if repo.has_object(id) {
        return Ok(id);
    }
    use gix::objs::Write;
    let id = repo.objects.write_buf(kind, data).map_err(|e| failed("object", e))?;
    let hex = id.to_string();
    let dir = repo.common_dir().join("objects").join(&hex[..2]);
    written.0.push((dir.join(&hex[2..]), dir));
    Ok(id)
}

/// New object files whose sync is still to come (`*_unsynced`): a write can go on with what does not need
/// them durable (its pre-receive hooks read them, which they can already) while they are synced, and
/// [`Unsynced::sync`] must be done before a ref may point at them.
#[derive(Default)]
#[must_use = "objects must be synced before a ref points at them"]
pub struct Unsynced(Vec<(PathBuf, PathBuf)>);

impl Unsynced {
    /// Syncs every file, then each directory once.
    pub fn sync(self) -> Result<(), Status> {
        let mut dirs: Vec<&PathBuf> = Vec::new();
        for (file, dir) in &self.0 {
            sync(file).map_err(|e| failed("object", format!("sync {}: {e}", file.display())))?;
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        for dir in dirs {
            sync(dir).map_err(|e| failed("object", format!("sync {}: {e}", dir.display())))?;
        }
        Ok(())
    }
}

/// fsync of a file or directory.
fn sync(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Whether `path` may name a file in a tree rgitaly writes: components git itself accepts with
/// `core.protectNTFS` (the default) and HFS protection — no empty, `.`, `..` or `.git` (nor `.git.`,
/// `git~1` and other spellings of it), no NUL.
pub fn valid_tree_path(path: &[u8]) -> bool {
    let options =
        gix::validate::path::component::Options { protect_windows: false, protect_hfs: true, protect_ntfs: true };
    !path.is_empty()
        && path
            .split(|b| *b == b'/')
            .all(|c| !c.contains(&0) && gix::validate::path::component(c.into(), None, options).is_ok())
}

/// One change to a tree: the regular file at `path` set to the blob `blob`, or removed (None).
pub struct TreeChange<'a> {
    pub path: &'a [u8],
    pub blob: Option<&'a str>,
}

/// Why a tree edit was refused.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// A path is not one git accepts (see [`valid_tree_path`]).
    #[error("invalid path {0:?}")]
    InvalidPath(String),
    /// A file would replace a directory, or a directory a file, on the way to a path.
    #[error("a file or directory is in the way of {0:?}")]
    InTheWay(String),
    #[error(transparent)]
    Other(#[from] Status),
}

/// Writes the tree `base` (None: an empty tree) with `changes` applied, creating and dropping
/// directories as needed, and returns its id. A change that would turn a directory into a file or a
/// file into a directory is refused, as git's index refuses it.
pub fn edit_tree(repo: &gix::Repository, base: Option<&str>, changes: &[TreeChange<'_>]) -> Result<String, EditError> {
    let mut written = Unsynced::default();
    let tree = edit_tree_unsynced(repo, base, changes, &mut written)?;
    written.sync()?;
    Ok(tree)
}

/// As [`edit_tree`], the syncs of the trees it writes left to `written`.
pub fn edit_tree_unsynced(
    repo: &gix::Repository,
    base: Option<&str>,
    changes: &[TreeChange<'_>],
    written: &mut Unsynced,
) -> Result<String, EditError> {
    let shown = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    let root = match base {
        Some(hex) => {
            let base = id(hex)?;
            let tree = repo.find_object(base).map_err(|e| failed("tree", e))?;
            let tree = tree.try_into_tree().map_err(|e| failed("tree", e))?;
            tree.decode().map_err(|e| failed("tree", e))?.into()
        }
        None => gix::objs::Tree::empty(),
    };
    let root_id = match base {
        Some(hex) => Some(id(hex)?),
        None => None,
    };
    for c in changes {
        if !valid_tree_path(c.path) {
            return Err(EditError::InvalidPath(shown(c.path)));
        }
        if c.blob.is_some() && in_the_way(repo, root_id, c.path)? {
            return Err(EditError::InTheWay(shown(c.path)));
        }
    }
    let mut editor = gix::objs::tree::Editor::new(root, &repo.objects, repo.object_hash());
    for c in changes {
        let path: &BStr = c.path.into();
        let components = path.split(|b| *b == b'/').map(<&BStr>::from);
        match c.blob {
            Some(blob) => editor.upsert(components, gix::objs::tree::EntryKind::Blob, id(blob)?),
            None => editor.remove(components),
        }
        .map_err(|e| failed("tree", e))?;
    }
    let written = editor.write(|tree: &gix::objs::Tree| -> Result<ObjectId, Status> {
        let mut buf = Vec::new();
        gix::objs::WriteTo::write_to(tree, &mut buf).map_err(|e| failed("tree", e))?;
        put_unsynced(repo, gix::object::Kind::Tree, &buf, written)
    })?;
    Ok(written.to_string())
}

/// Whether writing a file at `path` in `root` would replace a directory (the path itself is a tree) or a
/// file (one of its parents is not a tree).
fn in_the_way(repo: &gix::Repository, root: Option<ObjectId>, path: &[u8]) -> Result<bool, Status> {
    let Some(mut current) = root else { return Ok(false) };
    let components: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
    for (i, component) in components.iter().enumerate() {
        let Some(entries) = super::tree::entries_of(repo, current)? else { return Ok(false) };
        let Some((mode, _, oid)) = entries.into_iter().find(|(_, name, _)| name == component) else {
            return Ok(false);
        };
        let is_tree = mode & 0o170000 == 0o040000;
        let last = i + 1 == components.len();
        match (last, is_tree) {
            (true, is_tree) => return Ok(is_tree),
            (false, true) => current = oid,
            (false, false) => return Ok(true),
        }
    }
    Ok(false)
}
