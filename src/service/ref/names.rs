//! FindAllBranchNames, FindAllTagNames: full ref names under `refs/heads/` or `refs/tags/`, in git's
//! order, in responses of up to 1 MiB (upstream's chunker).

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::proto::gitaly::{
    FindAllBranchNamesRequest, FindAllBranchNamesResponse, FindAllTagNamesRequest, FindAllTagNamesResponse,
};
use crate::service::Ctx;

/// One name's share of a response: the bytes plus its field tag and length prefix.
fn encoded_len(name: &[u8]) -> usize {
    prost::encoding::bytes::encoded_len(1, &name.to_vec())
}

fn names<T: Send + 'static>(
    ctx: &Ctx,
    repository: Option<&crate::proto::gitaly::Repository>,
    prefix: &'static str,
    wrap: fn(Vec<Vec<u8>>) -> T,
) -> Result<BoxStream<T>, Status> {
    let path = ctx.locator.repo_path(repository)?;
    let c = ctx.clone();
    Ok(crate::odb::stream(move |send| {
        let repo = c.repos.open(&path)?;
        let (mut batch, mut size) = (Vec::new(), 0usize);
        for name in crate::odb::refs::names(&repo, prefix)? {
            let n = encoded_len(&name);
            if !batch.is_empty() && size + n >= crate::service::chunk::MAX_MESSAGE_SIZE {
                if !send(wrap(std::mem::take(&mut batch))) {
                    return Ok(());
                }
                size = 0;
            }
            size += n;
            batch.push(name);
        }
        if !batch.is_empty() {
            send(wrap(batch));
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
