//! The only door from a client's `Repository{storage_name, relative_path}` to a path on disk.
//!
//! Every RPC names its repository with client-supplied strings, so this is where traversal, absolute paths,
//! NUL bytes and symlinks that leave a storage are stopped. Services never join paths themselves: they ask
//! the locator, and what it returns is guaranteed to sit inside a configured storage.

use std::path::{Component, Path, PathBuf};

use tonic::Status;

use crate::config::Storage;
use crate::proto::gitaly::Repository;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LocateError {
    /// Upstream resolves a missing repository as one with an empty storage name.
    #[error("GetStorageByName: no such storage: \"\"")]
    MissingRepository,
    #[error("GetStorageByName: no such storage: {0:?}")]
    UnknownStorage(String),
    #[error("GetPath: relative path missing from {0}")]
    EmptyPath(String),
    #[error("GetRepoPath: relative path escapes root directory")]
    Escapes,
    #[error("GetRepoPath: {0:?} is reserved for the server")]
    Reserved(String),
    #[error("GetRepoPath: not a git repository: {0:?}")]
    NotARepository(String),
    #[error("GetRepoPath: {0}")]
    Io(String),
}

impl From<LocateError> for Status {
    fn from(e: LocateError) -> Status {
        match e {
            LocateError::NotARepository(_) => Status::not_found(e.to_string()),
            LocateError::Io(_) => Status::internal(e.to_string()),
            _ => Status::invalid_argument(e.to_string()),
        }
    }
}

/// Why a request's object directory was refused; the texts are upstream's.
#[derive(Debug, thiserror::Error)]
pub enum ObjectDirError {
    #[error(transparent)]
    Repository(#[from] LocateError),
    #[error("GetObjectDirectoryPath: empty directory")]
    Empty,
    #[error("GetObjectDirectoryPath: relative path escapes root directory")]
    Escapes,
    #[error("GetObjectDirectoryPath: does not exist: {0:?}")]
    Missing(String),
}

impl From<ObjectDirError> for Status {
    fn from(e: ObjectDirError) -> Status {
        match e {
            ObjectDirError::Repository(e) => e.into(),
            ObjectDirError::Missing(_) => Status::not_found(e.to_string()),
            _ => Status::invalid_argument(e.to_string()),
        }
    }
}

/// Resolves repositories and storages against the configured `[[storage]]` list.
#[derive(Debug, Clone)]
pub struct Locator {
    storages: Vec<StorageRoot>,
}

#[derive(Debug, Clone)]
struct StorageRoot {
    name: String,
    /// Canonical form, for containment checks after following symlinks.
    canonical: PathBuf,
}

impl Locator {
    pub fn new(storages: &[Storage]) -> std::io::Result<Locator> {
        let storages = storages
            .iter()
            .map(|s| Ok(StorageRoot { name: s.name.clone(), canonical: std::fs::canonicalize(&s.path)? }))
            .collect::<std::io::Result<_>>()?;
        Ok(Locator { storages })
    }

    /// Storage names and their (canonical) root directories, in config order.
    pub fn storages(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.storages.iter().map(|s| (s.name.as_str(), s.canonical.as_path()))
    }

    /// The root directory of a storage.
    pub fn storage_path(&self, name: &str) -> Result<&Path, LocateError> {
        self.storages
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.canonical.as_path())
            .ok_or_else(|| LocateError::UnknownStorage(name.to_string()))
    }

    /// The path of an existing git repository.
    pub fn repo_path(&self, repo: Option<&Repository>) -> Result<PathBuf, LocateError> {
        let (root, path) = self.lexical(repo)?;
        // Already checked at the start of this call (see [`with_resolved`]): the path is its own canonical
        // form, so no symlink is on the way.
        if RESOLVED.try_with(|seen| seen.contains(&path)).unwrap_or(false) {
            return Ok(path);
        }
        ensure_inside(root, &path)?;
        if !is_git_directory(&path) {
            return Err(LocateError::NotARepository(path.display().to_string()));
        }
        Ok(path)
    }

    /// The path a repository has or would have, validated but not required to exist (for creation).
    pub fn target_path(&self, repo: Option<&Repository>) -> Result<PathBuf, LocateError> {
        let (root, path) = self.lexical(repo)?;
        ensure_inside(root, &path)?;
        Ok(path)
    }

    /// A namespace (a directory of repositories) in a storage, with a repository path's checks: no `..`,
    /// absolute path, NUL, server directory or symlink out of the storage, and never the storage root.
    pub fn namespace_path(&self, storage: &str, name: &str) -> Result<PathBuf, LocateError> {
        let root = self.storage_path(storage)?;
        let path = root.join(validate_relative_path(name, storage)?);
        ensure_inside(root, &path)?;
        Ok(path)
    }

    /// The object directory a request names (`git_object_directory`, relative to the repository: a
    /// push's quarantine), as upstream's `GetObjectDirectoryPath`: it must be given, stay inside the
    /// repository (symlinks followed) and exist.
    pub fn object_directory_path(&self, repo: Option<&Repository>) -> Result<PathBuf, ObjectDirError> {
        let repo_path = self.repo_path(repo)?;
        let dir = repo.map(|r| r.git_object_directory.as_str()).unwrap_or_default();
        if dir.is_empty() {
            return Err(ObjectDirError::Empty);
        }
        if dir.contains('\0') {
            return Err(ObjectDirError::Escapes);
        }
        let mut path = repo_path.clone();
        for c in Path::new(dir).components() {
            match c {
                std::path::Component::Normal(c) => path.push(c),
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir if path != repo_path => {
                    path.pop();
                }
                _ => return Err(ObjectDirError::Escapes),
            }
        }
        let canonical = match path.canonicalize() {
            Ok(c) => c,
            Err(_) => return Err(ObjectDirError::Missing(path.display().to_string())),
        };
        let repo_canonical = repo_path.canonicalize().map_err(|e| LocateError::Io(e.to_string()))?;
        if !canonical.starts_with(&repo_canonical) {
            return Err(ObjectDirError::Escapes);
        }
        Ok(canonical)
    }

    /// The canonical path of an existing repository: every spelling of one repository (`p.git`, `./p.git`,
    /// `p.git/`, a symlink inside the storage) gives the same path, so it can key per-repository state.
    pub fn resolve(&self, repo: &Repository) -> Result<PathBuf, LocateError> {
        let (root, path) = self.lexical(Some(repo))?;
        // The common case, an existing directory, from one descriptor: see [`inspect`].
        if let Some((canonical, git)) = inspect(&path) {
            if !canonical.starts_with(root) || canonical == root {
                return Err(LocateError::Escapes);
            }
            if !git {
                return Err(LocateError::NotARepository(path.display().to_string()));
            }
            return Ok(canonical);
        }
        let canonical = ensure_inside(root, &path)?;
        if !is_git_directory(&path) {
            return Err(LocateError::NotARepository(path.display().to_string()));
        }
        canonical.ok_or_else(|| LocateError::NotARepository(path.display().to_string()))
    }

    /// The storage root, and the root joined with the cleaned relative path: what the path checks start
    /// from.
    fn lexical(&self, repo: Option<&Repository>) -> Result<(&Path, PathBuf), LocateError> {
        let repo = repo.ok_or(LocateError::MissingRepository)?;
        let root = self.storage_path(&repo.storage_name)?;
        Ok((root, root.join(validate_relative_path(&repo.relative_path, &repo.storage_name)?)))
    }

    /// Where a repository is moved before it is deleted: in the storage's scratch area, never visible at a
    /// repository path.
    pub fn removal_path(&self, storage: &str, repo: &Path) -> Result<PathBuf, LocateError> {
        let name = repo.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(self.temp_dir(storage)?.join(format!("{name}+removed-{}", uuid::Uuid::new_v4())))
    }

    /// A path inside a storage for scratch work (temporary repositories, bundles); created if missing.
    pub fn temp_dir(&self, storage: &str) -> Result<PathBuf, LocateError> {
        let dir = self.storage_path(storage)?.join("+gitaly").join("tmp");
        std::fs::create_dir_all(&dir).map_err(|e| LocateError::Io(e.to_string()))?;
        Ok(dir)
    }
}

tokio::task_local! {
    /// Canonical paths of the repositories resolved, and found to be repositories, at the start of the
    /// call whose task this is.
    static RESOLVED: Vec<PathBuf>;
}

/// Runs `call` knowing that the repositories at `paths` (canonical, from [`Locator::resolve`]) were checked
/// when it started, so the handler's own [`Locator::repo_path`] for them skips the filesystem (one
/// `realpath` and three `stat`s, a fifth of a point read's time in the daemon). Only an exact match counts:
/// a path reached through a symlink, or not resolved here, is checked again in full.
pub async fn with_resolved<F: std::future::Future>(paths: Vec<PathBuf>, call: F) -> F::Output {
    RESOLVED.scope(paths, call).await
}

/// Names at the top of a storage that belong to the server.
const RESERVED: &[&str] = &["+gitaly", crate::storage_metadata::FILE_NAME, "+testWrite"];

/// Lexical checks on a client-supplied relative path; returns it cleaned of `.` and empty components.
fn validate_relative_path(rel: &str, storage: &str) -> Result<PathBuf, LocateError> {
    if rel.is_empty() {
        return Err(LocateError::EmptyPath(format!("storage_name:{storage:?}")));
    }
    if rel.contains('\0') || rel.starts_with('/') {
        return Err(LocateError::Escapes);
    }
    let mut out = PathBuf::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return Err(LocateError::Escapes),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(LocateError::Escapes);
    }
    // The server's own files in a storage are never repositories.
    if let Some(Component::Normal(first)) = out.components().next() {
        if RESERVED.iter().any(|r| first == *r) {
            return Err(LocateError::Reserved(first.to_string_lossy().into_owned()));
        }
    }
    Ok(out)
}

/// Follows symlinks on the existing part of `path` and checks the result stays under `root`; returns the
/// canonical path when `path` exists.
///
/// The existing part is found walking down from the top, so the work is bounded by what exists on disk
/// (never deeper than PATH_MAX), not by how long a client made the path.
fn ensure_inside(root: &Path, path: &Path) -> Result<Option<PathBuf>, LocateError> {
    // The common case, an existing repository: one realpath settles it.
    if let Ok(canonical) = std::fs::canonicalize(path) {
        return if canonical.starts_with(root) && canonical != root {
            Ok(Some(canonical))
        } else {
            Err(LocateError::Escapes)
        };
    }
    let mut existing = PathBuf::new();
    let mut missing = false;
    for c in path.components() {
        existing.push(c);
        if std::fs::symlink_metadata(&existing).is_err() {
            existing.pop();
            missing = true;
            break;
        }
    }
    if existing.as_os_str().is_empty() {
        return Err(LocateError::Escapes);
    }
    // A dangling symlink on the way has no canonical form: refuse it rather than guess where it points.
    let canonical = std::fs::canonicalize(&existing).map_err(|_| LocateError::Escapes)?;
    // The storage root itself is not a repository path either.
    if !canonical.starts_with(root) || canonical == root && !missing {
        return Err(LocateError::Escapes);
    }
    Ok(None)
}

/// The canonical path of the directory at `path` and whether it is a git directory, or `None` when that
/// takes the long way. Every call resolves its repository, and `realpath` reads each component's link
/// on its own (nine on a GitLab hashed path) before three `stat`s walk the path again. Opened with no
/// symlink allowed anywhere on the way, the directory's path is its own canonical form (the storage root is
/// canonical and the relative path was cleaned of `.` and `..`): one `openat2`, and the git directory's
/// entries are looked up relative to it. A symlink on the way, an older kernel or any other failure leaves
/// it to `realpath`.
fn inspect(path: &Path) -> Option<(PathBuf, bool)> {
    #[cfg(target_os = "linux")]
    {
        use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
        let dir = nix::fcntl::openat2(nix::fcntl::AT_FDCWD, path, how).ok()?;
        let git = ["objects", "refs", "HEAD"]
            .iter()
            .all(|name| nix::sys::stat::fstatat(&dir, *name, nix::fcntl::AtFlags::empty()).is_ok());
        Some((path.to_path_buf(), git))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}

/// Upstream's test for a git directory: `objects`, `refs` and `HEAD` exist.
pub fn is_git_directory(path: &Path) -> bool {
    ["objects", "refs", "HEAD"].iter().all(|p| path.join(p).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(storage: &str, path: &str) -> Repository {
        Repository { storage_name: storage.into(), relative_path: path.into(), ..Default::default() }
    }

    fn setup() -> (tempfile::TempDir, Locator) {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(storage.join("a.git/objects")).unwrap();
        std::fs::create_dir_all(storage.join("a.git/refs")).unwrap();
        std::fs::write(storage.join("a.git/HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::create_dir_all(dir.path().join("outside.git/objects")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside.git/refs")).unwrap();
        std::fs::write(dir.path().join("outside.git/HEAD"), "x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside.git"), storage.join("link.git")).unwrap();
        std::os::unix::fs::symlink(dir.path(), storage.join("up")).unwrap();
        std::os::unix::fs::symlink(storage.join("a.git"), storage.join("inner.git")).unwrap();
        let loc = Locator::new(&[Storage { name: "default".into(), path: storage }]).unwrap();
        (dir, loc)
    }

    #[test]
    fn resolves_existing_repository() {
        let (_d, loc) = setup();
        assert!(loc.repo_path(Some(&repo("default", "a.git"))).unwrap().ends_with("a.git"));
        assert!(loc.repo_path(Some(&repo("default", "./a.git/"))).is_ok());
        assert!(loc.repo_path(Some(&repo("default", "inner.git"))).is_ok());
    }

    #[test]
    fn rejects_hostile_paths() {
        let (_d, loc) = setup();
        for p in [
            "../outside.git",
            "a.git/../../outside.git",
            "/etc",
            "link.git",
            "up/outside.git",
            "a\0b",
            ".",
            "",
            "+gitaly/tmp/x.git",
            ".gitaly-metadata",
            "./+gitaly",
        ] {
            let e = loc.repo_path(Some(&repo("default", p))).unwrap_err();
            assert_eq!(Status::from(e.clone()).code(), tonic::Code::InvalidArgument, "{p:?}: {e}");
        }
        assert_eq!(
            loc.repo_path(Some(&repo("nope", "a.git"))).unwrap_err(),
            LocateError::UnknownStorage("nope".into())
        );
        assert_eq!(loc.repo_path(None).unwrap_err(), LocateError::MissingRepository);
    }

    /// `resolve` gives the same answers whichever way it takes: straight through the descriptor for a plain
    /// path, through `realpath` when a symlink is on the way.
    #[test]
    fn resolve_gives_canonical_paths_or_refuses() {
        let (d, loc) = setup();
        let a = std::fs::canonicalize(d.path().join("storage/a.git")).unwrap();
        for p in ["a.git", "./a.git/", "inner.git"] {
            assert_eq!(loc.resolve(&repo("default", p)).unwrap(), a, "{p}");
        }
        for p in ["link.git", "up/outside.git", "../outside.git", "."] {
            let e = loc.resolve(&repo("default", p)).unwrap_err();
            assert_eq!(Status::from(e.clone()).code(), tonic::Code::InvalidArgument, "{p:?}: {e}");
        }
        std::fs::create_dir(d.path().join("storage/plain")).unwrap();
        std::fs::write(d.path().join("storage/file"), "").unwrap();
        for p in ["plain", "file", "missing.git"] {
            let e = loc.resolve(&repo("default", p)).unwrap_err();
            assert!(matches!(e, LocateError::NotARepository(_)), "{p:?}: {e}");
        }
    }

    /// Inside a call's scope, only the exact canonical paths resolved at its start skip the checks; an alias
    /// through a symlink gets its own (lexical) path, as outside the scope.
    #[tokio::test]
    async fn paths_resolved_for_the_call_are_reused() {
        let (d, loc) = setup();
        let a = loc.resolve(&repo("default", "a.git")).unwrap();
        with_resolved(vec![a.clone()], async {
            assert_eq!(loc.repo_path(Some(&repo("default", "./a.git"))).unwrap(), a);
            let alias = loc.repo_path(Some(&repo("default", "inner.git"))).unwrap();
            assert_eq!(alias, std::fs::canonicalize(d.path()).unwrap().join("storage/inner.git"));
            assert!(loc.repo_path(Some(&repo("default", "link.git"))).is_err());
        })
        .await;
        // Outside the scope the path is checked again: a repository gone since is not found.
        std::fs::remove_dir_all(&a).unwrap();
        assert!(loc.repo_path(Some(&repo("default", "a.git"))).is_err());
    }

    #[test]
    fn missing_repository_is_not_found() {
        let (_d, loc) = setup();
        let e = loc.repo_path(Some(&repo("default", "missing.git"))).unwrap_err();
        assert_eq!(Status::from(e).code(), tonic::Code::NotFound);
        assert!(loc.target_path(Some(&repo("default", "new/group/project.git"))).is_ok());
        assert!(loc.target_path(Some(&repo("default", "up/new.git"))).is_err());
    }
}
