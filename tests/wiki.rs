//! WikiService through the daemon and its workers, checked against the layout gollum gives a GitLab wiki:
//! pages written here land where gollum puts them, a wiki laid out by gollum (built here with plain git)
//! reads back page by page, and updates, renames, deletes, histories and listings follow upstream.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use rgitaly::client::AuthChannel;
use rgitaly::proto::gitaly::wiki_service_client::WikiServiceClient;
use rgitaly::proto::gitaly::*;
use tonic::Code;

type Client = WikiServiceClient<AuthChannel>;

/// A daemon with an empty wiki repository `w.git`.
async fn setup() -> (Daemon, PathBuf, Client) {
    let d = Daemon::start();
    let bare = d.repo_path("w.git");
    run(git(&d.work_dir("src")).args(["init", "--quiet", "--bare", "-b", "master"]).arg(&bare));
    let client = WikiServiceClient::new(d.channel().await);
    (d, bare, client)
}

fn details(message: &str) -> Option<WikiCommitDetails> {
    Some(WikiCommitDetails {
        name: b"Jane Doe".to_vec(),
        email: b"jane@example.com".to_vec(),
        message: message.as_bytes().to_vec(),
        user_id: 7,
        user_name: b"jane".to_vec(),
    })
}

/// Writes a page, its content split over several messages as a client may send it.
async fn write(c: &mut Client, d: &Daemon, name: &str, format: &str, content: &[u8]) -> Result<String, tonic::Status> {
    let mut msgs = vec![WikiWritePageRequest {
        repository: Some(d.repo("w.git")),
        name: name.as_bytes().to_vec(),
        format: format.into(),
        commit_details: details(&format!("write {name}")),
        content: Vec::new(),
    }];
    for chunk in content.chunks(5) {
        msgs.push(WikiWritePageRequest { content: chunk.to_vec(), ..Default::default() });
    }
    let r = c.wiki_write_page(tokio_stream::iter(msgs)).await?.into_inner();
    Ok(String::from_utf8(r.duplicate_error).unwrap())
}

async fn update(
    c: &mut Client,
    d: &Daemon,
    path: &str,
    title: &str,
    format: &str,
    content: &[u8],
) -> Result<(), tonic::Status> {
    let msgs = vec![
        WikiUpdatePageRequest {
            repository: Some(d.repo("w.git")),
            page_path: path.as_bytes().to_vec(),
            title: title.as_bytes().to_vec(),
            format: format.into(),
            commit_details: details(&format!("update {path}")),
            content: Vec::new(),
        },
        WikiUpdatePageRequest { content: content.to_vec(), ..Default::default() },
    ];
    c.wiki_update_page(tokio_stream::iter(msgs)).await.map(|_| ())
}

/// A found page's metadata and text; None when the answer is "no such page".
async fn find(c: &mut Client, d: &Daemon, title: &str, dir: &str, revision: &str) -> Option<(WikiPage, Vec<u8>)> {
    let req = WikiFindPageRequest {
        repository: Some(d.repo("w.git")),
        title: title.as_bytes().to_vec(),
        revision: revision.as_bytes().to_vec(),
        directory: dir.as_bytes().to_vec(),
    };
    let mut stream = c.wiki_find_page(req).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().expect("one message at least").page;
    let mut text = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        text.extend_from_slice(&m.page.unwrap().raw_data);
    }
    first.map(|p| (p, text))
}

/// Every page as WikiGetAllPages sends it: metadata, whole text.
async fn all_pages(c: &mut Client, d: &Daemon, sort: i32, desc: bool, limit: u32) -> Vec<(WikiPage, Vec<u8>)> {
    let req = WikiGetAllPagesRequest { repository: Some(d.repo("w.git")), limit, direction_desc: desc, sort };
    let mut stream = c.wiki_get_all_pages(req).await.unwrap().into_inner();
    let mut out: Vec<(WikiPage, Vec<u8>)> = Vec::new();
    let mut open = false;
    while let Some(m) = stream.message().await.unwrap() {
        if m.end_of_page {
            assert!(open, "end_of_page after a page");
            open = false;
            continue;
        }
        let page = m.page.unwrap();
        if open {
            out.last_mut().unwrap().1.extend_from_slice(&page.raw_data);
        } else {
            out.push((page, Vec::new()));
            open = true;
        }
    }
    assert!(!open, "every page ends with end_of_page");
    out
}

fn files(bare: &Path) -> Vec<String> {
    let out = run(git(bare).args(["ls-tree", "-r", "-z", "--name-only", "master"])).stdout;
    out.split(|b| *b == 0).filter(|f| !f.is_empty()).map(|f| String::from_utf8_lossy(f).into_owned()).collect()
}

fn show(bare: &Path, rev: &str) -> String {
    stdout(git(bare).args(["show", rev]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_land_where_gollum_puts_them_and_read_back() {
    let (d, bare, mut c) = setup().await;
    // An empty wiki: nothing to find or list.
    assert!(find(&mut c, &d, "Home", "", "").await.is_none());
    assert!(all_pages(&mut c, &d, 0, false, 0).await.is_empty());

    let cases = [
        ("Home", "markdown", "Home.md"),
        ("Textile page", "textile", "Textile-page.textile"),
        ("rdoc-page", "rdoc", "rdoc-page.rdoc"),
        ("Org", "org", "Org.org"),
        ("Creole", "creole", "Creole.creole"),
        ("Rest", "rest", "Rest.rest"),
        ("Ascii Doc", "asciidoc", "Ascii-Doc.asciidoc"),
        ("Media", "mediawiki", "Media.mediawiki"),
        ("Pod", "pod", "Pod.pod"),
        ("Plain", "txt", "Plain.txt"),
        ("Instálling Gitaly", "markdown", "Instálling-Gitaly.md"),
        ("docs/sub dir/Nested Page", "markdown", "docs/sub-dir/Nested-Page.md"),
    ];
    for (name, format, _) in cases {
        let content = format!("# {name}\r\nin {format}\n");
        assert_eq!(write(&mut c, &d, name, format, content.as_bytes()).await.unwrap(), "", "{name}");
    }
    let mut want: Vec<String> = cases.iter().map(|(_, _, f)| f.to_string()).collect();
    want.sort();
    let mut got = files(&bare);
    got.sort();
    assert_eq!(got, want);
    // One commit per page, on master, authored and committed as the request says, \r removed.
    assert_eq!(stdout(git(&bare).args(["rev-list", "--count", "master"])), cases.len().to_string());
    assert_eq!(
        stdout(git(&bare).args(["log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", "master"])),
        "Jane Doe <jane@example.com>|Jane Doe <jane@example.com>|write docs/sub dir/Nested Page"
    );
    assert_eq!(show(&bare, "master:Home.md"), "# Home\nin markdown");

    for (name, format, file) in cases {
        let (dir, title) = name.rsplit_once('/').unwrap_or(("", name));
        let (page, text) = find(&mut c, &d, title, dir, "").await.unwrap_or_else(|| panic!("{name}"));
        assert_eq!(String::from_utf8_lossy(&page.path), file);
        assert_eq!(page.format, format);
        assert_eq!(String::from_utf8_lossy(&page.title), title.replace('-', " "));
        assert_eq!(page.name, page.title);
        assert!(!page.historical);
        let version = page.version.unwrap();
        assert_eq!(version.format, format);
        assert_eq!(version.commit.unwrap().id, stdout(git(&bare).args(["rev-parse", "master"])));
        assert_eq!(String::from_utf8_lossy(&text), format!("# {name}\nin {format}\n"));
    }
    let (page, _) = find(&mut c, &d, "Instálling Gitaly", "", "").await.unwrap();
    assert_eq!(page.url_path, "Instálling-Gitaly");
    let (page, _) = find(&mut c, &d, "nested page", "/DOCS/sub dir/", "").await.expect("lookups ignore case");
    assert_eq!(page.url_path, "docs/sub-dir/Nested-Page");
    assert!(find(&mut c, &d, "Nested Page", "", "").await.is_none(), "a title is looked up in its directory");
    assert!(find(&mut c, &d, "Home.md", "", "").await.is_none());

    // A page at an older revision is historical; a revision that is no commit finds nothing.
    let first = stdout(git(&bare).args(["rev-list", "--max-parents=0", "master"]));
    let (page, text) = find(&mut c, &d, "Home", "", &first).await.unwrap();
    assert!(page.historical);
    assert_eq!(page.version.unwrap().commit.unwrap().id, first);
    assert_eq!(text, b"# Home\nin markdown\n");
    assert!(find(&mut c, &d, "Org", "", &first).await.is_none());
    assert!(find(&mut c, &d, "Home", "", "--all").await.is_none());
    assert!(find(&mut c, &d, "Home", "", "master:Home.md").await.is_none());

    // Listed by title (git's order of the paths), both directions, limited.
    let listed: Vec<String> = all_pages(&mut c, &d, 0, false, 0)
        .await
        .iter()
        .map(|(p, _)| String::from_utf8_lossy(&p.path).into_owned())
        .collect();
    let mut sorted = want.clone();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(listed, sorted);
    let desc = all_pages(&mut c, &d, 0, true, 3).await;
    let desc: Vec<String> = desc.iter().map(|(p, _)| String::from_utf8_lossy(&p.path).into_owned()).collect();
    assert_eq!(desc, sorted.iter().rev().take(3).cloned().collect::<Vec<_>>());
    d.assert_outside_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiki_laid_out_by_gollum_reads_back() {
    let (d, bare, mut c) = setup().await;
    // As GitLab on upstream Gitaly leaves a wiki: pages in gollum's names, a sidebar, an upload, a page
    // with a literal space and one with a plus, a page renamed after it was created, a non-UTF-8 page.
    let wt = d.work_dir("src").join("wt");
    run(git(&d.work_dir("src")).args(["init", "--quiet", "-b", "master"]).arg(&wt));
    let add = |path: &str, content: &[u8], message: &str| {
        let p = wt.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        run(git(&wt).args(["add", path]));
        run(git(&wt).args(["commit", "--quiet", "-m", message]));
    };
    add("Home.md", b"welcome\n", "home");
    add("_Sidebar.md", b"side\n", "sidebar");
    add("uploads/logo.png", b"\x89PNG", "upload");
    add("Lit Space.md", b"lit\n", "lit");
    add("a+b.md", b"plus\n", "plus");
    add("guides/Old-Name.rdoc", b"= guide\n", "guide");
    run(git(&wt).args(["mv", "guides/Old-Name.rdoc", "guides/New-Name.rdoc"]));
    run(git(&wt).args(["commit", "--quiet", "-m", "rename guide"]));
    add("latin1.txt", b"f\xFCr\n", "latin1");
    run(git(&wt).args(["push", "--quiet"]).arg(&bare).arg("master"));

    let (p, text) = find(&mut c, &d, "home", "", "").await.unwrap();
    assert_eq!(
        (p.path.as_slice(), text.as_slice(), p.format.as_str()),
        (&b"Home.md"[..], &b"welcome\n"[..], "markdown")
    );
    let (p, _) = find(&mut c, &d, "_Sidebar", "", "").await.expect("the sidebar is found by title");
    assert_eq!(p.path, b"_Sidebar.md");
    let (p, _) = find(&mut c, &d, "Lit Space", "", "").await.unwrap();
    assert_eq!((p.url_path.as_str(), p.title.as_slice()), ("Lit-Space", &b"Lit Space"[..]));
    for q in ["a b", "a-b", "a<b"] {
        let (p, _) = find(&mut c, &d, q, "", "").await.unwrap_or_else(|| panic!("{q}"));
        assert_eq!((p.path.as_slice(), p.url_path.as_str()), (&b"a+b.md"[..], "a-b"));
    }
    let (p, _) = find(&mut c, &d, "New Name", "guides", "").await.unwrap();
    assert_eq!((p.format.as_str(), p.url_path.as_str()), ("rdoc", "guides/New-Name"));
    assert!(find(&mut c, &d, "logo", "uploads", "").await.is_none(), "an upload is no page");
    let (_, text) = find(&mut c, &d, "latin1", "", "").await.unwrap();
    assert_eq!(text, b"fr\n", "invalid UTF-8 dropped, as upstream");

    // Listed: no sidebar, no upload.
    let pages = all_pages(&mut c, &d, 0, false, 0).await;
    let paths: Vec<String> = pages.iter().map(|(p, _)| String::from_utf8_lossy(&p.path).into_owned()).collect();
    assert_eq!(paths, ["Home.md", "Lit Space.md", "a+b.md", "guides/New-Name.rdoc", "latin1.txt"]);
    assert_eq!(pages[0].1, b"welcome\n");
    // By creation: the renamed guide keeps its place (created before latin1.txt).
    let pages = all_pages(&mut c, &d, 1, false, 0).await;
    let paths: Vec<String> = pages.iter().map(|(p, _)| String::from_utf8_lossy(&p.path).into_owned()).collect();
    assert_eq!(paths, ["Home.md", "Lit Space.md", "a+b.md", "guides/New-Name.rdoc", "latin1.txt"]);
    let pages = all_pages(&mut c, &d, 1, true, 2).await;
    let paths: Vec<String> = pages.iter().map(|(p, _)| String::from_utf8_lossy(&p.path).into_owned()).collect();
    assert_eq!(paths, ["latin1.txt", "guides/New-Name.rdoc"]);
    // ListPages: metadata only.
    let req = WikiListPagesRequest { repository: Some(d.repo("w.git")), limit: 2, ..Default::default() };
    let mut stream = c.wiki_list_pages(req).await.unwrap().into_inner();
    let mut listed = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        let p = m.page.unwrap();
        assert!(p.raw_data.is_empty());
        listed.push(String::from_utf8_lossy(&p.path).into_owned());
    }
    assert_eq!(listed, ["Home.md", "Lit Space.md"]);

    // History of the renamed page starts at the rename (gollum does not follow renames).
    let versions = page_versions(&mut c, &d, "guides/New-Name.rdoc", 0, 0).await;
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].commit.as_ref().unwrap().subject, b"rename guide");
    assert_eq!(versions[0].format, "", "a page in a directory has no root page of its title");
    let versions = page_versions(&mut c, &d, "Home.md", 0, 0).await;
    assert_eq!((versions.len(), versions[0].format.as_str()), (1, "markdown"));
}

async fn page_versions(c: &mut Client, d: &Daemon, path: &str, page: i32, per_page: i32) -> Vec<WikiPageVersion> {
    let req = WikiGetPageVersionsRequest {
        repository: Some(d.repo("w.git")),
        page_path: path.as_bytes().to_vec(),
        page,
        per_page,
    };
    let mut stream = c.wiki_get_page_versions(req).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        assert!(m.versions.len() <= 20);
        out.extend(m.versions);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_rename_delete_and_history() {
    let (d, bare, mut c) = setup().await;
    write(&mut c, &d, "Page", "markdown", b"v1\n").await.unwrap();
    write(&mut c, &d, "Other", "markdown", b"other\n").await.unwrap();

    // Duplicates: any extension, any case, answered in duplicate_error.
    assert_eq!(
        write(&mut c, &d, "page", "textile", b"x").await.unwrap(),
        "Cannot write //page.textile, found //Page.md."
    );
    write(&mut c, &d, "dir/Sub Page", "markdown", b"s\n").await.unwrap();
    assert_eq!(
        write(&mut c, &d, "dir/sub page", "markdown", b"x").await.unwrap(),
        "Cannot write dir/sub-page.md, found dir/Sub-Page.md."
    );

    // Content, then format, then a move into a directory.
    for i in 2..=4 {
        update(&mut c, &d, "Page.md", "Page", "markdown", format!("v{i}\n").as_bytes()).await.unwrap();
    }
    assert_eq!(show(&bare, "master:Page.md"), "v4");
    let history = page_versions(&mut c, &d, "Page.md", 0, 0).await;
    let subjects: Vec<String> =
        history.iter().map(|v| String::from_utf8_lossy(&v.commit.as_ref().unwrap().subject).into_owned()).collect();
    assert_eq!(subjects, ["update Page.md", "update Page.md", "update Page.md", "write Page"]);
    assert!(page_versions(&mut c, &d, "Page.md", 2, 5).await.is_empty(), "page 2 skips 20 versions");
    let one = page_versions(&mut c, &d, "Missing.md", 0, 0).await;
    assert!(one.is_empty());

    update(&mut c, &d, "Page.md", "Page", "asciidoc", b"= v5\n").await.unwrap();
    assert!(files(&bare).contains(&"Page.asciidoc".to_string()) && !files(&bare).contains(&"Page.md".to_string()));
    update(&mut c, &d, "Page.asciidoc", "guides/Moved Page", "asciidoc", b"= v6\n").await.unwrap();
    assert_eq!(show(&bare, "master:guides/Moved-Page.asciidoc"), "= v6");
    assert!(!files(&bare).iter().any(|f| f.starts_with("Page.")));
    // Only the case of the title changes: the page itself is no duplicate.
    update(&mut c, &d, "guides/Moved-Page.asciidoc", "guides/moved page", "asciidoc", b"= v7\n").await.unwrap();
    assert!(files(&bare).contains(&"guides/moved-page.asciidoc".to_string()));
    // Onto another page: refused, nothing written.
    let before = stdout(git(&bare).args(["rev-parse", "master"]));
    let e = update(&mut c, &d, "guides/moved-page.asciidoc", "OTHER", "markdown", b"x").await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, "Cannot write //OTHER.md, found //Other.md."));
    let e = update(&mut c, &d, "Nope.md", "Nope", "markdown", b"x").await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::NotFound, "Nope.md"));
    let e = update(&mut c, &d, "Other.md", "../../etc/passwd", "markdown", b"x").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(stdout(git(&bare).args(["rev-parse", "master"])), before);

    // Delete removes exactly the page's file.
    let delete = |path: &str| WikiDeletePageRequest {
        repository: Some(d.repo("w.git")),
        page_path: path.as_bytes().to_vec(),
        commit_details: details(&format!("delete {path}")),
    };
    c.wiki_delete_page(delete("Other.md")).await.unwrap();
    assert!(!files(&bare).contains(&"Other.md".to_string()));
    assert_eq!(stdout(git(&bare).args(["log", "-1", "--format=%s", "master"])), "delete Other.md");
    let e = c.wiki_delete_page(delete("Other.md")).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::NotFound, "Other.md"));
    run(git(&bare).args(["fsck", "--strict", "--no-progress"]));
    d.assert_outside_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_writes_nothing() {
    let (d, bare, mut c) = setup().await;
    write(&mut c, &d, "Home", "markdown", b"home\n").await.unwrap();
    let before = stdout(git(&bare).args(["rev-parse", "master"]));
    for (name, format) in [
        ("../etc/x", "markdown"),
        (".git/config", "markdown"),
        ("a/../../b", "markdown"),
        ("x\0y", "markdown"),
        ("/", "markdown"),
        ("//", "markdown"),
        (".git./hooks/x", "markdown"),
        ("git~1/config", "markdown"),
        ("x", "gitmodules"),
        ("/", "gitattributes"),
    ] {
        let e = write(&mut c, &d, name, format, b"x").await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name:?} {format:?}");
    }
    let base = WikiWritePageRequest {
        repository: Some(d.repo("w.git")),
        name: b"n".to_vec(),
        format: "markdown".into(),
        commit_details: details("m"),
        content: b"x".to_vec(),
    };
    for (req, msg) in [
        (WikiWritePageRequest { name: vec![], ..base.clone() }, "WikiWritePage: empty Name"),
        (WikiWritePageRequest { format: String::new(), ..base.clone() }, "WikiWritePage: empty Format"),
        (WikiWritePageRequest { commit_details: None, ..base.clone() }, "WikiWritePage: empty CommitDetails"),
        (
            WikiWritePageRequest {
                commit_details: Some(WikiCommitDetails { message: vec![], ..details("m").unwrap() }),
                ..base.clone()
            },
            "WikiWritePage: empty CommitDetails.Message",
        ),
    ] {
        let e = c.wiki_write_page(tokio_stream::iter(vec![req])).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, msg));
    }
    let e = update(&mut c, &d, "", "t", "markdown", b"x").await.unwrap_err();
    assert_eq!(e.message(), "WikiUpdatePage: empty Page Path");
    let e = update(&mut c, &d, "Home.md", "", "markdown", b"x").await.unwrap_err();
    assert_eq!(e.message(), "WikiUpdatePage: empty Title");
    let e = c
        .wiki_delete_page(WikiDeletePageRequest {
            repository: Some(d.repo("w.git")),
            page_path: vec![],
            commit_details: details("m"),
        })
        .await
        .unwrap_err();
    assert_eq!(e.message(), "WikiDeletePage: empty PagePath");
    let e = c
        .wiki_find_page(WikiFindPageRequest { repository: Some(d.repo("w.git")), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "WikiFindPage: empty Title"));
    let e = c
        .wiki_get_page_versions(WikiGetPageVersionsRequest { repository: Some(d.repo("w.git")), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.message(), "WikiGetPageVersions: Empty Path");
    assert_eq!(stdout(git(&bare).args(["rev-parse", "master"])), before);

    // A page where a directory is, or under a file, would replace it: refused, as git's index refuses it.
    let wt = d.work_dir("clash");
    run(git(&wt).args(["clone", "--quiet"]).arg(&bare).arg("."));
    std::fs::create_dir_all(wt.join("Block.md")).unwrap();
    std::fs::write(wt.join("Block.md/keep.txt"), "keep\n").unwrap();
    run(git(&wt).args(["add", "-A"]));
    run(git(&wt).args(["commit", "--quiet", "-m", "a directory named like a page"]));
    run(git(&wt).args(["push", "--quiet", "origin", "master"]));
    let before = stdout(git(&bare).args(["rev-parse", "master"]));
    let e = write(&mut c, &d, "Block", "markdown", b"x").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = write(&mut c, &d, "Home.md/x", "markdown", b"x").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(stdout(git(&bare).args(["rev-parse", "master"])), before);
    assert_eq!(show(&bare, "master:Block.md/keep.txt"), "keep");
    d.assert_outside_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_one_wiki_all_land() {
    let (d, bare, c) = setup().await;
    let mut calls = Vec::new();
    for i in 0..12 {
        let (mut c, repo) = (c.clone(), d.repo("w.git"));
        calls.push(tokio::spawn(async move {
            let msgs = vec![WikiWritePageRequest {
                repository: Some(repo),
                name: format!("Page {i}").into_bytes(),
                format: "markdown".into(),
                commit_details: details(&format!("write {i}")),
                content: format!("page {i}\n").into_bytes(),
            }];
            c.wiki_write_page(tokio_stream::iter(msgs)).await.map(|r| r.into_inner().duplicate_error)
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), b"");
    }
    assert_eq!(files(&bare).len(), 12);
    assert_eq!(stdout(git(&bare).args(["rev-list", "--count", "master"])), "12", "one commit each, none lost");
    run(git(&bare).args(["fsck", "--strict", "--no-progress"]));
}

fn script(p: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A write plans on the commit of the write before it while that one runs its hooks: when a hook refuses
/// that one, the writes built on it are planned again and land, and an answer read from it (a duplicate)
/// is not given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_takes_down_none_built_on_it() {
    let (d, bare, c) = setup().await;
    script(&bare.join("custom_hooks/pre-receive"), "cat > /dev/null; sleep 0.2");
    script(
        &bare.join("custom_hooks/update"),
        "if git log -1 --format=%s \"$3\" | grep -q refuse; then echo 'refused by the test' >&2; exit 1; fi",
    );
    let call = |name: String, message: String, content: String| {
        let (mut c, repo) = (c.clone(), d.repo("w.git"));
        tokio::spawn(async move {
            let msgs = vec![WikiWritePageRequest {
                repository: Some(repo),
                name: name.into_bytes(),
                format: "markdown".into(),
                commit_details: details(&message),
                content: content.into_bytes(),
            }];
            c.wiki_write_page(tokio_stream::iter(msgs)).await.map(|r| r.into_inner().duplicate_error)
        })
    };
    let mut calls = Vec::new();
    for i in 0..12 {
        let message = if i % 3 == 0 { format!("refuse {i}") } else { format!("write {i}") };
        calls.push((i % 3 == 0, call(format!("Page {i}"), message, format!("page {i}\n"))));
    }
    for (refused, call) in calls {
        match call.await.unwrap() {
            Err(e) if refused => {
                assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
                assert!(e.message().contains("refused by the test"), "{e:?}");
            }
            answer => assert_eq!(answer.unwrap(), b"", "refused: {refused}"),
        }
    }
    let pages = files(&bare);
    assert_eq!(pages.len(), 8, "{pages:?}");
    assert!(pages.iter().all(|p| !["Page-0.md", "Page-3.md", "Page-6.md", "Page-9.md"].contains(&p.as_str())));
    assert_eq!(stdout(git(&bare).args(["rev-list", "--count", "master"])), "8", "one commit each, none lost");

    // The second write of one name finds the first's page while the first runs its hooks; the first is
    // refused, so the second is no duplicate.
    let first = call("Shared".into(), "refuse shared".into(), "first\n".into());
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let second = call("Shared".into(), "keep shared".into(), "second\n".into());
    assert_eq!(second.await.unwrap().unwrap(), b"");
    let first = first.await.unwrap();
    assert!(first.as_ref().is_err_and(|e| e.code() == Code::FailedPrecondition), "{first:?}");
    assert_eq!(show(&bare, "master:Shared.md").trim_end(), "second");
    run(git(&bare).args(["fsck", "--strict", "--no-progress"]));
    d.assert_outside_untouched();
}
