//! WikiFindPage: the page a title names in a directory, on the wiki's branch or at a revision
//! (`historical`): its metadata, then its text in 128 KiB chunks. No such page (or revision) is one empty
//! response, as upstream answers it.

use rgitaly::proto::gitaly::*;
use tonic::codegen::BoxStream;
use tonic::Status;

use super::{chunks, gollum, page_text, Snapshot};
use crate::service::Target;

pub fn find_page(t: &Target, req: WikiFindPageRequest) -> Result<BoxStream<WikiFindPageResponse>, Status> {
    if req.title.is_empty() {
        return Err(Status::invalid_argument("WikiFindPage: empty Title"));
    }
    let odb = crate::service::open(&t.repo)?;
    let historical = !req.revision.is_empty();
    let snapshot = if historical { Snapshot::at(&odb, &req.revision)? } else { Snapshot::tip(&odb)? };
    let query = gollum::lookup_query(&req.title, &req.directory);
    let found = match &snapshot {
        Some(s) => s.find(&odb, &query)?.map(|p| (s, p)),
        None => None,
    };
    let Some((snapshot, page)) = found else {
        return Ok(Box::pin(tokio_stream::iter(vec![Ok(WikiFindPageResponse::default())])));
    };
    let mut messages = vec![Ok(WikiFindPageResponse { page: Some(page.proto(&snapshot.version(&odb)?, historical)) })];
    let text = page_text(&odb, &page)?;
    for chunk in chunks(&text) {
        messages
            .push(Ok(WikiFindPageResponse { page: Some(WikiPage { raw_data: chunk.to_vec(), ..Default::default() }) }));
    }
    Ok(Box::pin(tokio_stream::iter(messages)))
}
