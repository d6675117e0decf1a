//! WikiDeletePage: removes the one file of the page at `page_path` (found as upstream finds it, by title
//! in the path's directory), in a commit of its own.

use rgitaly::git::GitCmdFactory;
use rgitaly::proto::gitaly::*;
use tonic::Status;

use super::{commit_change, gollum, validate_details, Edit, Plan};
use crate::service::Target;

pub async fn delete_page(
    git: &std::sync::Arc<GitCmdFactory>,
    t: &Target,
    req: WikiDeletePageRequest,
) -> Result<WikiDeletePageResponse, Status> {
    if req.page_path.is_empty() {
        return Err(Status::invalid_argument("WikiDeletePage: empty PagePath"));
    }
    validate_details("WikiDeletePage", req.commit_details.as_ref())?;
    let details = req.commit_details.clone().unwrap_or_default();
    let query = gollum::query_for_path(&req.page_path);
    commit_change(git, t, &details, |odb, tip| {
        let page = tip
            .map(|tip| tip.find(odb, &query))
            .transpose()?
            .flatten()
            .ok_or_else(|| Status::not_found(String::from_utf8_lossy(&req.page_path).into_owned()))?;
        Ok(Plan::<()>::Commit(vec![Edit { path: page.path.clone(), blob: None }]))
    })
    .await?;
    Ok(WikiDeletePageResponse::default())
}
