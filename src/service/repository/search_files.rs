//! SearchFilesByName: the paths in a revision's tree under `query` (`git ls-tree --full-tree -r
//! --name-only <ref> -- <query>`, quoted as git quotes them), keeping those that match `filter` (a regular
//! expression of at most 1000 bytes), 20 paths per message, as upstream.

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::git::Sub;
use crate::proto::gitaly::{SearchFilesByNameRequest, SearchFilesByNameResponse};
use crate::service::Context;

/// Upstream's limits: the filter's length, and paths per response.
const FILTER_MAX: usize = 1000;
const PER_MESSAGE: usize = 20;

pub async fn search_files_by_name(
    ctx: &Context,
    req: SearchFilesByNameRequest,
) -> Result<BoxStream<SearchFilesByNameResponse>, Status> {
    let problem = if req.query.is_empty() {
        Some("no query given")
    } else if req.r#ref.is_empty() {
        Some("no ref given")
    } else if req.r#ref.starts_with(b"-") {
        Some("invalid ref argument")
    } else {
        None
    };
    if let Some(p) = problem {
        return Err(Status::invalid_argument(p));
    }
    let filter = if req.filter.is_empty() {
        None
    } else if req.filter.len() > FILTER_MAX {
        return Err(Status::invalid_argument("SearchFilesByName: filter exceeds maximum length"));
    } else {
        Some(
            regex::bytes::Regex::new(&req.filter)
                .map_err(|e| Status::invalid_argument(format!("SearchFilesByName: filter did not compile: {e}")))?,
        )
    };
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let revision = String::from_utf8(req.r#ref).map_err(|_| Status::invalid_argument("invalid ref argument"))?;
    let out = ctx
        .git
        .command(&repo, Sub::LsTree)
        .flag("--full-tree")
        .flag("--name-status")
        .flag("-r")
        .user_arg(&revision)
        .path_arg(&req.query)
        .run_to_end()
        .await
        .map_err(|e| Status::internal(format!("SearchFilesByName: cmd start failed: {e}")))?;
    // A revision git does not know lists nothing, as upstream streams nothing then.
    let files: Vec<Vec<u8>> = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter(|l| filter.as_ref().is_none_or(|f| f.is_match(l)))
        .map(<[u8]>::to_vec)
        .collect();
    let messages: Vec<_> =
        files.chunks(PER_MESSAGE).map(|c| Ok(SearchFilesByNameResponse { files: c.to_vec() })).collect();
    Ok(Box::pin(tokio_stream::iter(messages)))
}
