//! An object pool as upstream lays it out: a bare repository at `@pools/xx/yy/<sha256>.git` (the first four
//! hex digits repeated as directories) in the same storage as its members, which borrow its objects
//! through a relative `objects/info/alternates`. The layout rule is checked before the locator resolves
//! the path, so no other directory can be called a pool.

use std::path::{Component, Path, PathBuf};
use std::sync::LazyLock;

use tonic::Status;

use crate::git::Sub;
use crate::locator::is_git_directory;
use crate::proto::gitaly::{ObjectPool, Repository};
use crate::service::Context;

static POOL_DIR: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^@pools/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})\.git$").expect("valid regex")
});

#[derive(Clone)]
pub(crate) struct Pool {
    pub repository: Repository,
    /// The pool's directory (lexically resolved: it may not exist yet).
    pub path: PathBuf,
}

/// Whether `relative` is where a pool may live.
pub(crate) fn valid_pool_path(relative: &str) -> bool {
    POOL_DIR.captures(relative).is_some_and(|c| c[3].starts_with(&format!("{}{}", &c[1], &c[2])))
}

impl Pool {
    /// The pool a request names: `InvalidArgument` when there is none or it is not a pool path.
    pub fn from_proto(ctx: &Context, pool: Option<&ObjectPool>) -> Result<Pool, Status> {
        let repository = pool
            .and_then(|p| p.repository.clone())
            .ok_or_else(|| Status::invalid_argument("no object pool repository"))?;
        if !valid_pool_path(&repository.relative_path) {
            return Err(Status::invalid_argument("invalid object pool directory"));
        }
        let path = ctx.locator.target_path(Some(&repository)).map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Pool { repository, path })
    }

    pub fn exists(&self) -> bool {
        std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.is_dir())
    }

    pub fn is_valid(&self) -> bool {
        self.exists() && is_git_directory(&self.path)
    }

    /// Creates the pool as an empty bare repository unless it is one already.
    pub async fn init(&self, ctx: &Context) -> Result<(), Status> {
        if is_git_directory(&self.path) {
            return Ok(());
        }
        ctx.git
            .bare(Sub::Init)
            .flag("--bare")
            .flag("--quiet")
            .path_arg(&self.path)
            .output()
            .await
            .map_err(|e| Status::internal(format!("init object pool: {e}")))?;
        Ok(())
    }

    /// What a member at `repo` writes in its alternates: the pool's objects relative to its own.
    pub fn alternates_entry(&self, repo: &Path) -> PathBuf {
        relative(&repo.join("objects"), &self.path.join("objects"))
    }

    /// Whether the member at `repo` already borrows from this pool; an error when its alternates name
    /// something else.
    pub fn linked_to(&self, repo: &Path) -> Result<bool, String> {
        let Some(entry) = alternates_entry(repo)? else { return Ok(false) };
        if Path::new(&entry) == self.alternates_entry(repo) {
            return Ok(true);
        }
        if clean(&repo.join("objects").join(&entry)) == clean(&self.path.join("objects")) {
            // The same pool, named absolutely: relinked relatively.
            return Ok(false);
        }
        Err(format!("unexpected alternates content: {entry:?}"))
    }

    /// Whether the member at `repo` keeps no objects of its own and borrows from this pool alone (as after
    /// its link and a repack with `-l`): then every object its refs reach is in the pool.
    pub fn holds_all_of(&self, repo: &Path) -> Result<bool, String> {
        if !self.linked_to(repo)? {
            return Ok(false);
        }
        let alternates = std::fs::read(repo.join("objects/info/alternates")).map_err(|e| e.to_string())?;
        let lines = alternates.split(|b| *b == b'\n').filter(|l| !l.is_empty() && !l.starts_with(b"#")).count();
        if lines != 1 {
            return Ok(false);
        }
        let objects = repo.join("objects");
        for entry in std::fs::read_dir(&objects).map_err(|e| e.to_string())?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let fanout = name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit());
            if fanout && std::fs::read_dir(entry.path()).map_err(|e| e.to_string())?.next().is_some() {
                return Ok(false);
            }
        }
        let Ok(packs) = std::fs::read_dir(objects.join("pack")) else { return Ok(true) };
        Ok(!packs.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".pack")))
    }

    /// Makes the member at `repo` borrow this pool's objects (atomically replacing its alternates), and
    /// drops the member's bitmaps when the pool has its own, as upstream (git uses one bitmap only).
    pub fn link(&self, repo: &Path) -> Result<(), String> {
        if self.linked_to(repo)? {
            return Ok(());
        }
        let info = repo.join("objects/info");
        std::fs::create_dir_all(&info).map_err(|e| e.to_string())?;
        let mut tmp = tempfile::Builder::new().prefix("alternates").tempfile_in(&info).map_err(|e| e.to_string())?;
        let entry = self.alternates_entry(repo);
        std::io::Write::write_all(&mut tmp, entry.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        tmp.as_file().sync_all().map_err(|e| e.to_string())?;
        tmp.persist(info.join("alternates")).map_err(|e| e.error.to_string())?;
        if !bitmaps(&self.path).is_empty() {
            for b in bitmaps(repo) {
                let _ = std::fs::remove_file(b);
            }
        }
        Ok(())
    }
}

/// The first line of a repository's `objects/info/alternates`, unless missing or a comment.
pub(crate) fn alternates_entry(repo: &Path) -> Result<Option<String>, String> {
    match std::fs::read(repo.join("objects/info/alternates")) {
        Ok(data) => {
            let line = data.split(|b| *b == b'\n').next().unwrap_or_default();
            if line.is_empty() || line.starts_with(b"#") {
                return Ok(None);
            }
            Ok(Some(String::from_utf8_lossy(line).into_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading alternates file: {e}")),
    }
}

/// The pool the repository at `repo` (in `storage`, rooted at `root`) borrows from, if its alternates
/// name a repository inside the same storage.
pub(crate) fn pool_of(repo: &Path, storage: &str, root: &Path) -> Result<Option<ObjectPool>, String> {
    let Some(entry) = alternates_entry(repo)? else { return Ok(None) };
    let objects = clean(&repo.join("objects").join(entry));
    let dir = objects.parent().ok_or("object pool is not a valid git repository")?;
    let rel = dir.strip_prefix(root).map_err(|_| "object pool is outside the storage".to_string())?;
    if !is_git_directory(dir) || rel.as_os_str().is_empty() {
        return Err("object pool is not a valid git repository".into());
    }
    Ok(Some(ObjectPool {
        repository: Some(Repository {
            storage_name: storage.to_string(),
            relative_path: rel.to_string_lossy().into_owned(),
            ..Default::default()
        }),
    }))
}

fn bitmaps(repo: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(repo.join("objects/pack")) else { return Vec::new() };
    dir.flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name.starts_with("pack-") && name.ends_with(".bitmap")
        })
        .collect()
}

/// `path` with `.` and `..` resolved lexically.
pub(crate) fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// The relative path from directory `from` to `to` (both absolute, lexically clean).
pub(crate) fn relative(from: &Path, to: &Path) -> PathBuf {
    let (from, to) = (clean(from), clean(to));
    let f: Vec<_> = from.components().collect();
    let t: Vec<_> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_paths_follow_the_layout() {
        let hash = format!("abcd{}", "0".repeat(60));
        assert!(valid_pool_path(&format!("@pools/ab/cd/{hash}.git")));
        assert!(!valid_pool_path(&format!("@pools/ab/ce/{hash}.git")));
        assert!(!valid_pool_path(&format!("@pools/ab/cd/{hash}.git/../../x")));
        assert!(!valid_pool_path("@pools/ab/cd/abcd.git"));
        assert!(!valid_pool_path(&format!("group/@pools/ab/cd/{hash}.git")));
    }

    #[test]
    fn relative_paths_between_directories() {
        assert_eq!(
            relative(Path::new("/s/group/p.git/objects"), Path::new("/s/@pools/ab/cd/x.git/objects")),
            PathBuf::from("../../../@pools/ab/cd/x.git/objects")
        );
        assert_eq!(clean(Path::new("/s/a/../b/./c")), PathBuf::from("/s/b/c"));
    }
}
