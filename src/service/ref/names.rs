//! FindAllBranchNames, FindAllTagNames: full ref names under `refs/heads/` or `refs/tags/`, in git's
//! order, in responses of up to 1 MiB (upstream's chunker).

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::proto::gitaly::{
    FindAllBranchNamesRequest, FindAllBranchNamesResponse, FindAllTagNamesRequest, FindAllTagNamesResponse,
};
use crate::service::Ctx;

fn names<T: Send + 'static>(
    ctx: &Ctx,
    repository: Option<&crate::proto::gitaly::Repository>,
    prefix: &'static str,
    wrap: fn(Vec<Vec<u8>>) -> T,
) -> Result<BoxStream<T>, Status> {
    let path = ctx.locator.repo_path(repository)?;
    let c = ctx.clone();
    Ok(crate::odb::stream(move |out| async move {
        let repo = c.repos.open(&path)?;
        let names = crate::odb::refs::names(&repo, prefix)?;
        for batch in crate::service::chunk::byte_batches(names, 1) {
            out.send(wrap(batch)).await;
        }
        Ok(())
    }))
}

pub fn find_all_branch_names(
    ctx: &Ctx,
    req: FindAllBranchNamesRequest,
) -> Result<BoxStream<FindAllBranchNamesResponse>, Status> {
    names(ctx, req.repository.as_ref(), "refs/heads/", |names| FindAllBranchNamesResponse { names })
}

pub fn find_all_tag_names(
    ctx: &Ctx,
    req: FindAllTagNamesRequest,
) -> Result<BoxStream<FindAllTagNamesResponse>, Status> {
    names(ctx, req.repository.as_ref(), "refs/tags/", |names| FindAllTagNamesResponse { names })
}
