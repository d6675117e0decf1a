//! Tree listings as upstream builds them (`TreeEntry` with commit, root and flat paths), from trees read
//! in-process.

use gix::ObjectId;
use tonic::Status;

use crate::proto::gitaly::{tree_entry::EntryType, TreeEntry};

/// Upstream follows chains of single-directory trees this many levels for `flat_path`.
const FLAT_PATH_DEPTH: usize = 10;

fn entry_type(mode: u32) -> EntryType {
    match mode & 0o170000 {
        0o160000 => EntryType::Commit,
        0o040000 => EntryType::Tree,
        _ => EntryType::Blob,
    }
}

/// `path` joined under `dir`, as Go's `filepath.Join` does for the paths trees hold.
fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut out = dir.strip_suffix(b"/").unwrap_or(dir).to_vec();
    out.push(b'/');
    out.extend_from_slice(name);
    out
}

/// The tree at `path` below `root` ("" is the root itself); `None` when it is missing or not a tree.
pub fn tree_at(repo: &gix::Repository, root: ObjectId, path: &[u8]) -> Result<Option<ObjectId>, Status> {
    let mut current = root;
    for component in path.split(|b| *b == b'/').filter(|c| !c.is_empty() && *c != b".") {
        let Some(entries) = entries_of(repo, current)? else { return Ok(None) };
        match entries.into_iter().find(|(_, name, _)| name == component) {
            Some((mode, _, oid)) if entry_type(mode) == EntryType::Tree => current = oid,
            _ => return Ok(None),
        }
    }
    Ok(Some(current))
}

/// One raw tree entry: mode, name, object id.
pub type RawEntry = (u32, Vec<u8>, ObjectId);

/// The raw entries of tree `id`; `None` when it is not a tree.
pub fn entries_of(repo: &gix::Repository, id: ObjectId) -> Result<Option<Vec<RawEntry>>, Status> {
    let Some((kind, data)) = super::read(repo, id)? else { return Ok(None) };
    if kind != gix::object::Kind::Tree {
        return Ok(None);
    }
    let tree = gix::objs::TreeRefIter::from_bytes(&data, repo.object_hash());
    let mut out = Vec::new();
    for entry in tree {
        let e = entry.map_err(|e| Status::internal(format!("read tree {id}: {e}")))?;
        out.push((e.mode.value() as u32, e.filename.to_vec(), e.oid.to_owned()));
    }
    Ok(Some(out))
}

/// The entries of the tree at `revision:path`, recursively in upstream's order (each tree followed by its
/// contents) when asked. Nothing (not an error) when the revision or path does not resolve, or when the
/// path climbs out of the root.
pub fn tree_entries(
    repo: &gix::Repository,
    revision: &str,
    path: &[u8],
    recursive: bool,
) -> Result<Vec<TreeEntry>, Status> {
    let path: &[u8] = if path == b"." { b"" } else { path };
    if path.starts_with(b"../") || path == b".." {
        return Ok(Vec::new());
    }
    let Some(root) = root_tree(repo, revision) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    collect(repo, revision, &root.to_string(), root, path, recursive, &mut out)?;
    Ok(out)
}

/// `revision^{tree}`.
pub fn root_tree(repo: &gix::Repository, revision: &str) -> Option<ObjectId> {
    let id = super::resolve(repo, revision.as_bytes())?;
    let object = repo.find_object(id).ok()?;
    object.peel_to_tree().ok().map(|t| t.id)
}

/// The entries under `path`, depth first in upstream's order (each tree followed by its contents), walked
/// with an explicit stack of open directories: a tree nested thousands deep costs one read per tree and no
/// call stack.
fn collect(
    repo: &gix::Repository,
    revision: &str,
    root_oid: &str,
    root: ObjectId,
    path: &[u8],
    recursive: bool,
    out: &mut Vec<TreeEntry>,
) -> Result<(), Status> {
    let Some(start) = tree_at(repo, root, path)? else { return Ok(()) };
    let Some(entries) = entries_of(repo, start)? else { return Ok(()) };
    // (directory path, its entries, next one to emit)
    let mut stack: Vec<(Vec<u8>, Vec<RawEntry>, usize)> = vec![(path.to_vec(), entries, 0)];
    while let Some((dir, entries, next)) = stack.last_mut() {
        let Some((mode, name, oid)) = entries.get(*next).cloned() else {
            stack.pop();
            continue;
        };
        *next += 1;
        let kind = entry_type(mode);
        let entry_path = join(dir, &name);
        out.push(TreeEntry {
            oid: oid.to_string(),
            root_oid: root_oid.to_string(),
            path: entry_path.clone(),
            r#type: kind as i32,
            mode: mode as i32,
            commit_oid: revision.to_string(),
            flat_path: Vec::new(),
        });
        if recursive && kind == EntryType::Tree {
            if let Some(children) = entries_of(repo, oid)? {
                stack.push((entry_path, children, 0));
            }
        }
    }
    Ok(())
}

/// The files (blobs, symlinks) of `revision`'s tree whose name `keep` accepts, depth first in git's
/// tree order, as (path, object id): a lean walk for callers that need no `TreeEntry` (the wiki's page
/// listing). Empty when the revision does not resolve.
pub fn files(
    repo: &gix::Repository,
    revision: &str,
    keep: impl Fn(&[u8]) -> bool,
) -> Result<Vec<(Vec<u8>, String)>, Status> {
    let mut out = Vec::new();
    walk_files(
        repo,
        revision,
        |_| true,
        |path, name, oid| {
            if keep(name) {
                out.push((path.to_vec(), oid.to_string()));
            }
            std::ops::ControlFlow::<()>::Continue(())
        },
    )?;
    Ok(out)
}

/// Walks the files of `revision`'s tree depth first in git's tree order, entering only the directories
/// (by path) that `descend` accepts, and hands each file's path, name and id to `visit` until it breaks:
/// a lookup that knows where its file can be reads no other tree and stops at the first it finds.
pub fn walk_files<B>(
    repo: &gix::Repository,
    revision: &str,
    descend: impl Fn(&[u8]) -> bool,
    mut visit: impl FnMut(&[u8], &[u8], ObjectId) -> std::ops::ControlFlow<B>,
) -> Result<Option<B>, Status> {
    let Some(root) = root_tree(repo, revision) else { return Ok(None) };
    let Some(entries) = entries_of(repo, root)? else { return Ok(None) };
    let mut stack: Vec<(Vec<u8>, Vec<RawEntry>, usize)> = vec![(Vec::new(), entries, 0)];
    let mut path = Vec::new();
    while let Some((dir, entries, next)) = stack.last_mut() {
        let Some((mode, name, oid)) = entries.get(*next) else {
            stack.pop();
            continue;
        };
        *next += 1;
        // One buffer for every path: most entries are passed over.
        path.clear();
        if !dir.is_empty() {
            path.extend_from_slice(dir);
            path.push(b'/');
        }
        path.extend_from_slice(name);
        match entry_type(*mode) {
            EntryType::Tree if descend(&path) => {
                if let Some(children) = entries_of(repo, *oid)? {
                    stack.push((path.clone(), children, 0));
                }
            }
            EntryType::Blob => {
                if let std::ops::ControlFlow::Break(b) = visit(&path, name, *oid) {
                    return Ok(Some(b));
                }
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Sets `flat_path`: for a tree, the path down a chain of trees that each hold only one tree.
pub fn populate_flat_paths(repo: &gix::Repository, entries: &mut [TreeEntry]) -> Result<(), Status> {
    for entry in entries.iter_mut() {
        entry.flat_path = entry.path.clone();
        if entry.r#type != EntryType::Tree as i32 {
            continue;
        }
        let Ok(mut tree) = ObjectId::from_hex(entry.oid.as_bytes()) else { continue };
        for _ in 1..FLAT_PATH_DEPTH {
            let Some(children) = entries_of(repo, tree)? else { break };
            match children.as_slice() {
                [(mode, name, oid)] if entry_type(*mode) == EntryType::Tree => {
                    entry.flat_path = join(&entry.flat_path, name);
                    tree = *oid;
                }
                _ => break,
            }
        }
    }
    Ok(())
}

/// The entry at `path` in `revision`'s tree, as upstream's TreeEntryFinder finds it (by listing the
/// parent directory); `None` when there is none.
pub fn find_entry(repo: &gix::Repository, revision: &str, path: &[u8]) -> Result<Option<TreeEntry>, Status> {
    let dir = match path.iter().rposition(|b| *b == b'/') {
        Some(i) => &path[..i],
        None => b"".as_slice(),
    };
    let entries = tree_entries(repo, revision, dir, false)?;
    Ok(entries.into_iter().find(|e| e.path == path))
}
