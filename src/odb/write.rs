//! Objects written in-process: a blob, a tree edited from another, a commit from exact bytes. A wiki
//! write on a large wiki otherwise starts four git processes (hash-object, read-tree, update-index,
//! write-tree) for what is a few object writes; these are loose objects exactly as git writes them
//! (hashed first, nothing written when the object exists).

use gix::bstr::BStr;
use gix::ObjectId;
use tonic::Status;

fn failed(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("write {what}: {e}"))
}

fn id(hex: &str) -> Result<ObjectId, Status> {
    ObjectId::from_hex(hex.as_bytes()).map_err(|e| Status::internal(format!("object id {hex:?}: {e}")))
}

/// Writes a blob and returns its id.
pub fn blob(repo: &gix::Repository, data: &[u8]) -> Result<String, Status> {
    repo.write_blob(data).map(|id| id.to_string()).map_err(|e| failed("blob", e))
}

/// Writes a commit from its exact bytes (as `git::repo::commit_bytes` lays them out) and returns its id.
pub fn commit(repo: &gix::Repository, data: &[u8]) -> Result<String, Status> {
    object(repo, gix::object::Kind::Commit, data)
}

/// Writes an object of `kind` from its exact bytes and returns its id.
pub fn object(repo: &gix::Repository, kind: gix::object::Kind, data: &[u8]) -> Result<String, Status> {
    let id = gix::objs::compute_hash(repo.object_hash(), kind, data).map_err(|e| failed("object", e))?;
    if repo.has_object(id) {
        return Ok(id.to_string());
    }
    use gix::objs::Write;
    repo.objects.write_buf(kind, data).map(|id| id.to_string()).map_err(|e| failed("object", e))
}

/// One change to a tree: the regular file at `path` set to the blob `blob`, or removed (None).
pub struct TreeChange<'a> {
    pub path: &'a [u8],
    pub blob: Option<&'a str>,
}

/// Writes the tree `base` (None: an empty tree) with `changes` applied, creating and dropping
/// directories as needed, and returns its id. Paths must already be checked (no `..`, `.git`, NUL).
pub fn edit_tree(repo: &gix::Repository, base: Option<&str>, changes: &[TreeChange<'_>]) -> Result<String, Status> {
    let base = match base {
        Some(hex) => id(hex)?,
        None => ObjectId::empty_tree(repo.object_hash()),
    };
    let mut editor = repo.edit_tree(base).map_err(|e| failed("tree", e))?;
    for c in changes {
        let path: &BStr = c.path.into();
        match c.blob {
            Some(blob) => editor.upsert(path, gix::object::tree::EntryKind::Blob, id(blob)?),
            None => editor.remove(path),
        }
        .map_err(|e| failed("tree", e))?;
    }
    editor.write().map(|id| id.to_string()).map_err(|e| failed("tree", e))
}
