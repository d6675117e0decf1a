//! Refs read in-process: names under a prefix in git's order, single refs, and HEAD.

use gix::bstr::ByteSlice;
use gix::ObjectId;
use tonic::Status;

fn internal<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> Status + '_ {
    move |e| Status::internal(format!("{what}: {e}"))
}

/// Full names of the refs under `prefix` (ending in `/`), sorted bytewise as `for-each-ref` sorts them.
pub fn names(repo: &gix::Repository, prefix: &str) -> Result<Vec<Vec<u8>>, Status> {
    let platform = repo.references().map_err(internal("list refs"))?;
    let iter = platform.prefixed(prefix.as_bytes().as_bstr()).map_err(internal("list refs"))?;
    let mut out = Vec::new();
    // A ref that does not parse is skipped, as `for-each-ref` skips it (with a warning).
    for r in iter.flatten() {
        out.push(r.name().as_bstr().to_vec());
    }
    out.sort();
    Ok(out)
}

/// Whether any ref lies under `prefix` (ending in `/`): stops at the first, where [`names`] reads them all
/// (hundreds of loose branches cost a write RPC more than its merge).
pub fn any(repo: &gix::Repository, prefix: &str) -> Result<bool, Status> {
    let platform = repo.references().map_err(internal("list refs"))?;
    let mut iter = platform.prefixed(prefix.as_bytes().as_bstr()).map_err(internal("list refs"))?;
    Ok(iter.any(|r| r.is_ok()))
}

/// The object a ref points at (through symbolic refs), not peeled; `None` when there is no such ref or the
/// name is not a valid ref name.
pub fn target(repo: &gix::Repository, full_name: &[u8]) -> Result<Option<ObjectId>, Status> {
    let Ok(name) = <&gix::refs::PartialNameRef>::try_from(full_name.as_bstr()) else { return Ok(None) };
    let reference = match repo.try_find_reference(name) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(e) => return Err(Status::internal(format!("read ref: {e}"))),
    };
    if reference.name().as_bstr() != full_name.as_bstr() {
        return Ok(None);
    }
    let mut reference = reference;
    Ok(reference.follow_to_object().ok().map(|id| id.detach()))
}

/// The commit a ref ends at (through symbolic refs and tags); `None` when there is no such ref or it does
/// not end at a commit.
pub fn commit(repo: &gix::Repository, full_name: &[u8]) -> Result<Option<ObjectId>, Status> {
    Ok(target(repo, full_name)?.and_then(|id| super::resolve_commit(repo, id.to_string().as_bytes())))
}

/// The full name HEAD points at, when it is a symbolic ref.
pub fn head_target(repo: &gix::Repository) -> Result<Option<Vec<u8>>, Status> {
    match repo.head_name() {
        Ok(name) => Ok(name.map(|n| n.as_bstr().to_vec())),
        Err(e) => Err(Status::internal(format!("read HEAD: {e}"))),
    }
}

const LEGACY_DEFAULT: &[u8] = b"refs/heads/master";

/// Upstream's default branch: none without branches; the only one; HEAD's target if it is a branch; else
/// `refs/heads/master` if it exists; else the first branch in name order. Empty when there is none.
pub fn default_branch(repo: &gix::Repository) -> Result<Vec<u8>, Status> {
    default_of(&names(repo, "refs/heads/")?, || head_target(repo))
}

/// [`default_branch`] from branch names already read (sorted bytewise) and HEAD's target, read only when
/// the rule needs it.
pub fn default_of(
    branches: &[Vec<u8>],
    head: impl FnOnce() -> Result<Option<Vec<u8>>, Status>,
) -> Result<Vec<u8>, Status> {
    Ok(match branches {
        [] => Vec::new(),
        [only] => only.clone(),
        _ => {
            if let Some(head) = head()?.filter(|h| branches.contains(h)) {
                head
            } else if branches.iter().any(|b| b == LEGACY_DEFAULT) {
                LEGACY_DEFAULT.to_vec()
            } else {
                branches[0].clone()
            }
        }
    })
}

/// Every ref under `refs/` with the object it ends at (symbolic refs followed, as a fetch of
/// `+refs/*:refs/*` writes them), sorted bytewise.
pub fn resolved(repo: &gix::Repository) -> Result<Vec<(Vec<u8>, ObjectId)>, Status> {
    let platform = repo.references().map_err(internal("list refs"))?;
    let iter = platform.prefixed(b"refs/".as_bstr()).map_err(internal("list refs"))?;
    let mut out = Vec::new();
    for r in iter.flatten() {
        let name = r.name().as_bstr().to_vec();
        let mut r = r;
        if let Ok(id) = r.follow_to_object() {
            out.push((name, id.detach()));
        }
    }
    out.sort();
    Ok(out)
}

/// A `packed-refs` file (sorted, every annotated tag fully peeled) holding `refs`, each object looked up
/// in `odb`; `None` when `odb` lacks one of them.
pub fn packed_file(refs: &[(Vec<u8>, ObjectId)], odb: &gix::Repository) -> Result<Option<Vec<u8>>, Status> {
    let mut out = b"# pack-refs with: peeled fully-peeled sorted \n".to_vec();
    for (name, id) in refs {
        let Some((kind, _)) = super::header(odb, *id)? else { return Ok(None) };
        out.extend_from_slice(format!("{id} ").as_bytes());
        out.extend_from_slice(name);
        out.push(b'\n');
        if kind == gix::object::Kind::Tag {
            let Ok(object) = odb.find_object(*id) else { return Ok(None) };
            let Ok(peeled) = object.peel_tags_to_end() else { return Ok(None) };
            out.extend_from_slice(format!("^{}\n", peeled.id).as_bytes());
        }
    }
    Ok(Some(out))
}
