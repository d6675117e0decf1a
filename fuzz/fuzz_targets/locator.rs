//! Fuzzes the locator (`rgitaly::locator::Locator`), the one door from client strings to paths.
//!
//! A storage is laid out once per process (a temp dir kept in a `OnceLock`) with a repository, nested
//! directories, a regular file, and symlinks that stay inside, leave the storage, point at its parent, at
//! the storage itself, and dangle. A second storage sits beside it.
//!
//! Input: the first byte picks the storage name (one of the configured names, an unknown or empty one,
//! or the bytes up to the first `0xff`) and whether bytes are read as lossy UTF-8 or must be valid
//! UTF-8; the rest is the relative path. Checked, besides "no panic":
//! - any `Ok` path lies under the storage's root, lexically (root + only normal components, none of
//!   them reserved at the top) and after canonicalizing its longest existing prefix; it is never the
//!   root itself;
//! - `repo_path` is `Ok` only where `target_path` is `Ok` with the same path, and only for a git
//!   directory; its errors convert to a `Status` without panicking.
#![no_main]

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rgitaly::config::Storage;
use rgitaly::locator::{is_git_directory, Locator};
use rgitaly::proto::gitaly::Repository;

struct Fixture {
    _dir: tempfile::TempDir,
    locator: Locator,
    /// Canonical roots by storage name.
    roots: Vec<(String, PathBuf)>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path();
        let storage = base.join("storage");
        let other = base.join("other");
        let outside = base.join("outside.git");
        for d in ["objects", "refs"] {
            std::fs::create_dir_all(storage.join("a.git").join(d)).unwrap();
            std::fs::create_dir_all(storage.join("group/sub/b.git").join(d)).unwrap();
            std::fs::create_dir_all(outside.join(d)).unwrap();
            std::fs::create_dir_all(other.join("c.git").join(d)).unwrap();
        }
        for repo in [storage.join("a.git"), storage.join("group/sub/b.git"), outside.clone(), other.join("c.git")] {
            std::fs::write(repo.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        }
        std::fs::create_dir_all(storage.join("+gitaly/tmp")).unwrap();
        std::fs::write(storage.join(".gitaly-metadata"), "{}").unwrap();
        std::fs::write(storage.join("file"), "not a directory").unwrap();
        let link = |target: &Path, name: &str| std::os::unix::fs::symlink(target, storage.join(name)).unwrap();
        link(&outside, "out.git"); // leaves the storage
        link(base, "up"); // the storage's parent
        link(&storage, "self"); // the storage root itself
        link(&storage.join("a.git"), "inner.git"); // stays inside
        link(Path::new("group/sub"), "rel"); // relative, stays inside
        link(Path::new("../other"), "sibling"); // relative, into the other storage
        link(&base.join("missing"), "dangling");
        let locator = Locator::new(&[
            Storage { name: "default".into(), path: storage.clone() },
            Storage { name: "other".into(), path: other.clone() },
        ])
        .expect("locator");
        let roots = vec![
            ("default".to_string(), std::fs::canonicalize(&storage).unwrap()),
            ("other".to_string(), std::fs::canonicalize(&other).unwrap()),
        ];
        Fixture { _dir: dir, locator, roots }
    })
}

/// Canonicalizes the longest existing prefix of `path` and appends the rest unchanged.
fn resolve(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut missing = Vec::new();
    while std::fs::symlink_metadata(existing).is_err() {
        missing.push(existing.file_name().expect("a missing path has a last component").to_os_string());
        existing = existing.parent().expect("the storage root exists");
    }
    let mut out = std::fs::canonicalize(existing)
        .unwrap_or_else(|e| panic!("Ok path {} has an uncanonicalizable prefix: {e}", path.display()));
    out.extend(missing.iter().rev());
    out
}

fn check_inside(root: &Path, path: &Path) {
    let rel = path.strip_prefix(root).unwrap_or_else(|_| panic!("{} is not under {}", path.display(), root.display()));
    assert!(!rel.as_os_str().is_empty(), "the storage root itself was returned");
    assert!(rel.components().all(|c| matches!(c, Component::Normal(_))), "unclean path {}", path.display());
    let first = rel.components().next().unwrap().as_os_str();
    assert!(![".gitaly-metadata", "+gitaly", "+testWrite"].iter().any(|r| first == *r), "reserved: {}", path.display());
    let resolved = resolve(path);
    assert!(
        resolved.starts_with(root) && resolved != root,
        "{} resolves to {} outside {}",
        path.display(),
        resolved.display(),
        root.display()
    );
}

fn text(bytes: &[u8], lossy: bool) -> Option<String> {
    if lossy {
        Some(String::from_utf8_lossy(bytes).into_owned())
    } else {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else { return };
    let fx = fixture();
    let lossy = mode & 0x80 != 0;
    let (storage, rel) = match mode & 0x3 {
        0 => ("default".to_string(), rest),
        1 => ("other".to_string(), rest),
        2 => (if mode & 0x4 != 0 { String::new() } else { "nope".to_string() }, rest),
        _ => {
            let cut = rest.iter().position(|&b| b == 0xff).unwrap_or(rest.len());
            let Some(name) = text(&rest[..cut], lossy) else { return };
            (name, rest.get(cut + 1..).unwrap_or_default())
        }
    };
    let Some(relative_path) = text(rel, lossy) else { return };
    let repo = Repository { storage_name: storage.clone(), relative_path, ..Default::default() };
    let root = fx.roots.iter().find(|(n, _)| *n == storage).map(|(_, r)| r.as_path());

    let target = fx.locator.target_path(Some(&repo));
    match &target {
        Ok(path) => check_inside(root.expect("Ok only for a configured storage"), path),
        Err(e) => drop(tonic::Status::from(e.clone())),
    }
    match fx.locator.repo_path(Some(&repo)) {
        Ok(path) => {
            assert_eq!(target.as_ref().ok(), Some(&path), "repo_path Ok but target_path differs");
            assert!(is_git_directory(&path), "repo_path returned a non-repository {}", path.display());
        }
        Err(e) => drop(tonic::Status::from(e)),
    }
});
