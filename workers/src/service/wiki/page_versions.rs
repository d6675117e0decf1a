//! WikiGetPageVersions: the commits on the wiki's branch that changed one page's file, newest first, 20
//! per message, with upstream's paging quirks (pages of 20 whatever `per_page` says, at least 20 results)
//! and without following renames; each version's format is that of the page with the same title at the
//! wiki's root in that commit ("" when there is none, e.g. for a page in a directory), as upstream finds it.

use rgitaly::git::{GitCmdFactory, Sub};
use rgitaly::proto::gitaly::*;
use tonic::codegen::BoxStream;
use tonic::Status;

use super::{gollum, Snapshot, WIKI_REF};
use crate::service::{internal, Target};

/// gollum's page size as upstream configures it.
const PER_PAGE: i32 = 20;

pub async fn page_versions(
    git: &GitCmdFactory,
    t: &Target,
    req: WikiGetPageVersionsRequest,
) -> Result<BoxStream<WikiGetPageVersionsResponse>, Status> {
    if req.page_path.is_empty() {
        return Err(Status::invalid_argument("WikiGetPageVersions: Empty Path"));
    }
    let found = {
        let odb = rgitaly::odb::open_uncached(&t.repo).map_err(internal)?;
        let tip = Snapshot::tip(&odb)?;
        match tip {
            Some(tip) => tip.find(&odb, &gollum::query_for_path(&req.page_path))?.cloned(),
            None => None,
        }
    };
    let Some(page) = found else {
        return Ok(Box::pin(tokio_stream::iter(vec![Ok(WikiGetPageVersionsResponse { versions: vec![] })])));
    };
    let skip = (req.page.max(1) - 1) * PER_PAGE;
    let count = req.per_page.max(PER_PAGE);
    let out = git
        .command(&t.repo, Sub::Log)
        .flag("--format=%H")
        .flag(format!("--skip={skip}"))
        .flag(format!("--max-count={count}"))
        .trusted_arg(WIKI_REF)
        .path_arg(std::ffi::OsStr::new(std::str::from_utf8(&page.path).unwrap_or_default()))
        .output()
        .await
        .map_err(internal)?;
    let title = gollum::title_of(gollum::split_path(&page.path).1);
    let root_query = gollum::lookup_query(&title, b"");
    let odb = rgitaly::odb::open_uncached(&t.repo).map_err(internal)?;
    let mut versions = Vec::new();
    for oid in out.stdout_text().lines() {
        let snapshot =
            Snapshot::at(&odb, oid.as_bytes())?.ok_or_else(|| Status::internal(format!("commit {oid} vanished")))?;
        let format = snapshot.find(&odb, &root_query)?.map(|p| p.format).unwrap_or_default();
        versions.push(WikiPageVersion { commit: Some(snapshot.version(&odb)?), format: format.to_string() });
    }
    let messages: Vec<_> =
        versions.chunks(20).map(|c| Ok(WikiGetPageVersionsResponse { versions: c.to_vec() })).collect();
    Ok(Box::pin(tokio_stream::iter(messages)))
}
