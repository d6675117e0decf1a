//! WikiWritePage: a new page from a client stream (name, format and commit details first, then content),
//! at gollum's path for the name; a page with the same name in its directory (any extension, any case) is
//! answered in `duplicate_error` with gollum's text, nothing written.

use rgitaly::git::GitCmdFactory;
use rgitaly::proto::gitaly::*;
use tonic::{Status, Streaming};

use super::{commit_change, duplicate, gollum, read_content, validate_details, write_content, Edit, Plan};
use crate::service::Target;

pub async fn write_page(
    git: &std::sync::Arc<GitCmdFactory>,
    t: &Target,
    mut stream: Streaming<WikiWritePageRequest>,
) -> Result<WikiWritePageResponse, Status> {
    let first = stream.message().await?.unwrap_or_default();
    if first.name.is_empty() {
        return Err(Status::invalid_argument("WikiWritePage: empty Name"));
    }
    if first.format.is_empty() {
        return Err(Status::invalid_argument("WikiWritePage: empty Format"));
    }
    validate_details("WikiWritePage", first.commit_details.as_ref())?;
    if !gollum::known_format(&first.format) {
        return Err(Status::invalid_argument(format!("WikiWritePage: unknown format {:?}", first.format)));
    }
    let path = gollum::new_page_path(&first.name, &first.format).ok_or_else(|| {
        Status::invalid_argument(format!("WikiWritePage: invalid page name {:?}", String::from_utf8_lossy(&first.name)))
    })?;
    let content = read_content(&mut stream, &first, |m| &m.content).await?;
    let blob = write_content(t, content)?;
    let details = first.commit_details.clone().unwrap_or_default();
    let answer = commit_change(git, t, &details, |odb, tip| {
        if let Some(message) = tip.map(|tip| duplicate(odb, tip, &path, None)).transpose()?.flatten() {
            return Ok(Plan::Answer(message));
        }
        Ok(Plan::Commit(vec![Edit { path: path.clone(), blob: Some(blob.clone()) }]))
    })
    .await?;
    Ok(WikiWritePageResponse { duplicate_error: answer.unwrap_or_default().into_bytes() })
}
