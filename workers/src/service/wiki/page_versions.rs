//! WikiGetPageVersions: the commits on the wiki's branch that changed one page's file, newest first, 20
//! per message, with upstream's paging quirks (pages of 20 whatever `per_page` says, at least 20 results)
//! and without following renames; each version's format is that of the page with the same title at the
//! wiki's root in that commit ("" when there is none, e.g. for a page in a directory), as upstream finds it.

use std::os::unix::ffi::OsStrExt;

use rgitaly::git::{GitCmdFactory, Sub};
use rgitaly::proto::gitaly::*;
use tonic::codegen::BoxStream;
use tonic::Status;

use super::{gollum, Snapshot, WIKI_REF};
use crate::service::{internal, Target};

/// gollum's page size as upstream configures it.
const PER_PAGE: i32 = 20;
/// The most versions one call returns (upstream has no bound; each costs a tree read here).
const MAX_PER_PAGE: i32 = 1000;

pub async fn page_versions(
    git: &GitCmdFactory,
    t: &Target,
    req: WikiGetPageVersionsRequest,
) -> Result<BoxStream<WikiGetPageVersionsResponse>, Status> {
    if req.page_path.is_empty() {
        return Err(Status::invalid_argument("WikiGetPageVersions: Empty Path"));
    }
    let found = {
        let odb = crate::service::open(&t.repo)?;
        match Snapshot::tip(&odb)? {
            Some(tip) => tip.find(&odb, &gollum::query_for_path(&req.page_path))?,
            None => None,
        }
    };
    let Some(page) = found else {
        return Ok(Box::pin(tokio_stream::iter(vec![Ok(WikiGetPageVersionsResponse { versions: vec![] })])));
    };
    let skip = (req.page.max(1) - 1).saturating_mul(PER_PAGE);
    let count = req.per_page.clamp(PER_PAGE, MAX_PER_PAGE);
    let out = git
        .command(&t.repo, Sub::Log)
        .env("GIT_LITERAL_PATHSPECS", "1")
        .flag("--format=%H")
        .flag(format!("--skip={skip}"))
        .flag(format!("--max-count={count}"))
        .trusted_arg(WIKI_REF)
        .path_arg(std::ffi::OsStr::from_bytes(&page.path))
        .output()
        .await
        .map_err(internal)?;
    let repo = t.repo.clone();
    let versions = tokio::task::spawn_blocking(move || -> Result<Vec<WikiPageVersion>, Status> {
        let title = gollum::title_of(gollum::split_path(&page.path).1);
        let root_query = gollum::Lookup::new(&gollum::lookup_query(&title, b""));
        let odb = crate::service::open(&repo)?;
        let mut versions = Vec::new();
        for oid in out.stdout_text().lines() {
            let commit = Snapshot::at(&odb, oid.as_bytes())?
                .ok_or_else(|| Status::internal(format!("commit {oid} vanished")))?
                .version(&odb)?;
            // Only the root can hold a page the root query finds.
            let root = rgitaly::odb::tree::tree_entries(&odb, oid, b"", false)?;
            let format = root
                .iter()
                .filter(|e| e.r#type == tree_entry::EntryType::Blob as i32)
                .filter_map(|e| gollum::format_of(&e.path).filter(|_| root_query.matches(&e.path)))
                .next()
                .unwrap_or_default();
            versions.push(WikiPageVersion { commit: Some(commit), format: format.to_string() });
        }
        Ok(versions)
    })
    .await
    .map_err(internal)??;
    let messages: Vec<_> =
        versions.chunks(20).map(|c| Ok(WikiGetPageVersionsResponse { versions: c.to_vec() })).collect();
    Ok(Box::pin(tokio_stream::iter(messages)))
}
