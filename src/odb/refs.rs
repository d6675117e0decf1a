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
    let Some(mut reference) = find_exact(repo, full_name).map_err(|e| Status::internal(format!("read ref: {e}")))?
    else {
        return Ok(None);
    };
    Ok(reference.follow_to_object().ok().map(|id| id.detach()))
}

/// The ref of exactly this full name, loose or packed; None for an invalid name. A lookup by name alone
/// would also try `refs/heads/<name>` and the like.
fn find_exact<'r>(repo: &'r gix::Repository, full_name: &[u8]) -> Result<Option<gix::Reference<'r>>, String> {
    let Ok(name) = <&gix::refs::PartialNameRef>::try_from(full_name.as_bstr()) else { return Ok(None) };
    let found = repo.try_find_reference(name).map_err(|e| e.to_string())?;
    Ok(found.filter(|r| r.name().as_bstr() == full_name.as_bstr()))
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

/// Compare-and-swap of one ref, in-process through gix's ref transaction (git's lock files, its
/// `core.filesRefLockTimeout`, packed-refs on deletion, the reflog where the repository keeps one): `new`
/// None deletes; `old` Some(None) requires the ref not to exist, Some(id) to be `id`, None accepts any value.
/// What git update-ref checks beyond the swap is checked here too: the object exists, a branch points at a
/// commit, a new name does not clash with an existing one as file and directory. Err is git's reason.
pub fn update(
    repo: &gix::Repository,
    name: &str,
    new: Option<ObjectId>,
    old: Option<Option<ObjectId>>,
) -> Result<(), String> {
    use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
    use gix::refs::Target;
    let full =
        gix::refs::FullName::try_from(name).map_err(|_| format!("refusing to update ref with bad name '{name}'"))?;
    if let Some(id) = new {
        match super::header(repo, id).map_err(|e| e.message().to_string())? {
            None => return Err(format!("trying to write ref '{name}' with nonexistent object {id}")),
            Some((kind, _)) if kind != gix::object::Kind::Commit && name.starts_with("refs/heads/") => {
                return Err(format!("trying to write non-commit object {id} to branch '{name}'"))
            }
            Some(_) => {}
        }
        if !exists(repo, name)? {
            name_is_free(repo, name)?;
        }
    }
    let expected = match old {
        None => PreviousValue::Any,
        Some(None) => PreviousValue::MustNotExist,
        Some(Some(id)) => PreviousValue::MustExistAndMatch(Target::Object(id)),
    };
    let log = LogChange { mode: RefLog::AndReference, force_create_reflog: false, message: "rgitaly".into() };
    let change = match new {
        Some(id) => Change::Update { log, expected, new: Target::Object(id) },
        // Deleting what must not exist: nothing to do once it does not.
        None if old == Some(None) => {
            return match exists(repo, name)? {
                false => Ok(()),
                true => Err(format!("cannot lock ref '{name}': reference already exists")),
            }
        }
        None => Change::Delete { expected, log: RefLog::AndReference },
    };
    let edit = RefEdit { change, name: full, deref: true };
    // Bare repositories keep no reflog unless configured to; where one is kept, a fixed identity.
    let fallback = gix::actor::Signature {
        name: "rgitaly".into(),
        email: "rgitaly@localhost".into(),
        time: gix::date::Time::now_local_or_utc(),
    };
    let mut time = gix::date::parse::TimeBuf::default();
    let committer = match repo.committer() {
        Some(Ok(c)) => c,
        _ => fallback.to_ref(&mut time),
    };
    let config = repo.config_snapshot();
    let wait = |key: &str, default_ms: u64| {
        let ms = config.integer(key).map_or(default_ms, |v| v.max(0) as u64);
        gix::lock::acquire::Fail::AfterDurationWithBackoff(std::time::Duration::from_millis(ms))
    };
    let (ref_wait, packed_wait) = (wait("core.filesRefLockTimeout", 100), wait("core.packedRefsTimeout", 1000));
    let locked = |e: gix::error::Error| format!("cannot lock ref '{name}': {e}");
    let prepared = repo.refs.transaction().prepare([edit], ref_wait, packed_wait).map_err(locked)?;
    // The new value is in `<ref>.lock` now; git (with rgitaly's `core.fsync=reference`) syncs it before
    // the rename that makes it the ref.
    let lock = repo.common_dir().join(format!("{name}.lock"));
    if let Ok(file) = std::fs::File::open(&lock) {
        file.sync_all().map_err(|e| format!("cannot fsync '{}': {e}", lock.display()))?;
    }
    prepared.commit(Some(committer)).map(|_| ()).map_err(|e| format!("cannot update ref '{name}': {e}"))
}

/// git's check that a new ref `name` is neither inside another ref (`refs/heads/a` for `refs/heads/a/b`) nor
/// a directory of others, loose or packed: gix's transaction only sees the loose files.
fn name_is_free(repo: &gix::Repository, name: &str) -> Result<(), String> {
    // Every enclosing name below `refs/`: `refs/heads` and `refs/heads/a` for `refs/heads/a/b`.
    for (i, _) in name.match_indices('/').skip(1) {
        if exists(repo, &name[..i])? {
            return Err(format!("cannot lock ref '{name}': '{}' exists; cannot create '{name}'", &name[..i]));
        }
    }
    if any(repo, &format!("{name}/")).map_err(|e| e.message().to_string())? {
        return Err(format!("cannot lock ref '{name}': there are refs under '{name}/'"));
    }
    Ok(())
}

/// Whether a ref of exactly this full name exists, loose or packed.
fn exists(repo: &gix::Repository, name: &str) -> Result<bool, String> {
    find_exact(repo, name.as_bytes()).map(|r| r.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "a")
            .env("GIT_AUTHOR_EMAIL", "a@b")
            .env("GIT_COMMITTER_NAME", "a")
            .env("GIT_COMMITTER_EMAIL", "a@b")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn refs(dir: &std::path::Path) -> String {
        git(dir, &["for-each-ref", "--format=%(objectname) %(refname)"], None)
    }

    /// Each answer matches what `git update-ref` does with the same request, the repository stays valid to
    /// git (`fsck`), and a refused update changes nothing.
    #[test]
    fn updates_as_git_update_ref_does() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        git(d, &["init", "--quiet", "--bare"], None);
        let tree = git(d, &["mktree"], Some(""));
        let c1 = git(d, &["commit-tree", "-m", "one", &tree], None);
        let c2 = git(d, &["commit-tree", "-p", &c1, "-m", "two", &tree], None);
        let id = |hex: &str| ObjectId::from_hex(hex.as_bytes()).unwrap();
        let (c1, c2, tree) = (id(&c1), id(&c2), id(&tree));
        let repo = || crate::odb::open_uncached(d).unwrap();

        update(&repo(), "refs/heads/main", Some(c1), Some(None)).unwrap();
        assert!(update(&repo(), "refs/heads/main", Some(c2), Some(None)).is_err(), "exists");
        assert!(update(&repo(), "refs/heads/main", Some(c2), Some(Some(c2))).is_err(), "stale old value");
        update(&repo(), "refs/heads/main", Some(c2), Some(Some(c1))).unwrap();
        assert_eq!(refs(d), format!("{c2} refs/heads/main"));

        // git's other refusals: a tree on a branch, a missing object, a bad name, file/directory clashes.
        let before = refs(d);
        let refused = [
            update(&repo(), "refs/heads/tree", Some(tree), None),
            update(&repo(), "refs/heads/x", Some(id("1111111111111111111111111111111111111111")), None),
            update(&repo(), "refs/heads/a..b", Some(c1), None),
            update(&repo(), "refs/heads/main/sub", Some(c1), None),
        ];
        for r in &refused {
            assert!(r.is_err(), "{refused:?}");
        }
        assert_eq!(refs(d), before);
        update(&repo(), "refs/tags/tree", Some(tree), None).unwrap();
        // A packed `refs/heads/twin/sub` refuses `refs/heads/twin`, whatever other refs end in that name.
        update(&repo(), "refs/heads/refs/heads/twin", Some(c1), None).unwrap();
        update(&repo(), "refs/heads/twin/sub", Some(c1), None).unwrap();
        git(d, &["pack-refs", "--all", "--prune"], None);
        assert!(update(&repo(), "refs/heads/twin", Some(c1), None).is_err(), "refs under refs/heads/twin/");
        for gone in ["refs/heads/refs/heads/twin", "refs/heads/twin/sub"] {
            update(&repo(), gone, None, Some(Some(c1))).unwrap();
        }

        // Packed refs: a swap on a packed value, a clash with a packed name, deletion from packed-refs.
        update(&repo(), "refs/heads/dir/leaf", Some(c1), None).unwrap();
        git(d, &["pack-refs", "--all", "--prune"], None);
        assert!(update(&repo(), "refs/heads/dir", Some(c1), None).is_err(), "packed refs/heads/dir/leaf");
        assert!(update(&repo(), "refs/heads/main/sub", Some(c1), None).is_err(), "packed refs/heads/main");
        update(&repo(), "refs/heads/main", Some(c1), Some(Some(c2))).unwrap();
        assert!(update(&repo(), "refs/heads/dir/leaf", None, Some(Some(c2))).is_err(), "delete, stale");
        update(&repo(), "refs/heads/dir/leaf", None, Some(Some(c1))).unwrap();
        update(&repo(), "refs/heads/gone", None, Some(None)).unwrap();
        assert_eq!(refs(d), format!("{c1} refs/heads/main\n{tree} refs/tags/tree"),);
        git(d, &["fsck", "--strict"], None);

        // A repository that keeps reflogs gets git's format.
        git(d, &["config", "core.logAllRefUpdates", "always"], None);
        update(&repo(), "refs/heads/main", Some(c2), Some(Some(c1))).unwrap();
        assert_eq!(git(d, &["reflog", "show", "--format=%H", "refs/heads/main"], None), c2.to_string());
    }
}
