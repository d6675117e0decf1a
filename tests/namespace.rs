//! NamespaceService through the daemon: namespaces created, renamed, checked and removed inside the
//! storage, and every name that would reach outside it (or the storage itself) refused.

mod common;

use common::*;
use rgitaly::proto::gitaly::namespace_service_client::NamespaceServiceClient;
use rgitaly::proto::gitaly::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_inside_the_storage_only() {
    let d = Daemon::start();
    let wt = sample_worktree(&d.work_dir("src"));
    d.seed_repo("group/p.git", &wt);
    let mut c = NamespaceServiceClient::new(d.channel().await);
    let storage = d.repo_path("");
    let exists = |name: &str| NamespaceExistsRequest { storage_name: "default".into(), name: name.into() };
    let add = |name: &str| AddNamespaceRequest { storage_name: "default".into(), name: name.into() };
    let remove = |name: &str| RemoveNamespaceRequest { storage_name: "default".into(), name: name.into() };
    let rename = |from: &str, to: &str| RenameNamespaceRequest {
        storage_name: "default".into(),
        from: from.into(),
        to: to.into(),
    };

    assert!(c.namespace_exists(exists("group")).await.unwrap().into_inner().exists);
    assert!(
        !c.namespace_exists(exists("group/p.git/HEAD")).await.unwrap().into_inner().exists,
        "a file is no namespace"
    );
    assert!(!c.namespace_exists(exists("nope")).await.unwrap().into_inner().exists);
    c.add_namespace(add("a/b/c")).await.unwrap();
    assert!(storage.join("a/b/c").is_dir());
    c.rename_namespace(rename("group", "moved/group")).await.unwrap();
    assert!(storage.join("moved/group/p.git/HEAD").exists() && !storage.join("group").exists());
    let e = c.rename_namespace(rename("moved", "a")).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "to directory a already exists"));
    let e = c.rename_namespace(rename("missing", "x")).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "from directory missing not found"));
    let e = c.rename_namespace(rename("", "x")).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "from and to cannot be empty"));
    c.remove_namespace(remove("a")).await.unwrap();
    assert!(!storage.join("a").exists());
    c.remove_namespace(remove("a")).await.unwrap();

    // Outside the storage, the storage itself, the server's own directory: refused, nothing touched.
    let outside = d.work_dir("outside");
    std::fs::write(outside.join("keep"), "keep").unwrap();
    std::os::unix::fs::symlink(&outside, storage.join("link")).unwrap();
    for name in [".", "./", "..", "../outside", "/tmp", "link", "link/x", "+gitaly", "a\0b"] {
        let e = c.remove_namespace(remove(name)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "remove {name:?}");
        let e = c.add_namespace(add(name)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "add {name:?}");
        let e = c.namespace_exists(exists(name)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "exists {name:?}");
        let e = c.rename_namespace(rename("moved", name)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "rename to {name:?}");
    }
    let e = c.remove_namespace(remove("")).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "Name: cannot be empty"));
    let e = c.add_namespace(AddNamespaceRequest { storage_name: "nope".into(), name: "x".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(outside.join("keep").exists());
    assert!(storage.join("moved/group/p.git/HEAD").exists());
    d.assert_outside_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walk_repos_lists_every_repository() {
    use rgitaly::proto::gitaly::internal_gitaly_client::InternalGitalyClient;
    let d = Daemon::start();
    let wt = sample_worktree(&d.work_dir("src"));
    for rel in ["b.git", "a/x.git", "a/y/z.git", "@hashed/ab/cd/abcd.git"] {
        d.seed_repo(rel, &wt);
    }
    // Not repositories: a plain directory, a repository's own insides, a link out of the storage.
    std::fs::create_dir_all(d.repo_path("empty/dir")).unwrap();
    std::os::unix::fs::symlink(d.repo_path("b.git"), d.repo_path("link.git")).unwrap();
    let mut c = InternalGitalyClient::new(d.channel().await);
    let mut s = c.walk_repos(WalkReposRequest { storage_name: "default".into() }).await.unwrap().into_inner();
    let mut found = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        found.push(m.relative_path);
    }
    assert_eq!(found, ["@hashed/ab/cd/abcd.git", "a/x.git", "a/y/z.git", "b.git"]);
    let e = c.walk_repos(WalkReposRequest { storage_name: "nope".into() }).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::NotFound, "storage name \"nope\" not found"));
}
