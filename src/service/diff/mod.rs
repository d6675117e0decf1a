//! DiffService: diffs between commits. git's diff output is the contract here, so git computes it (through
//! the command layer) and [`parser`] shapes it as upstream does.

mod commit_diff;
pub mod parser;
mod raw;
mod stats;

use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::Ctx;
use crate::proto::gitaly::diff_service_server::DiffService;
use crate::proto::gitaly::*;

pub struct DiffSvc(pub Ctx);

type Streamed<T> = Result<Response<BoxStream<T>>, Status>;

/// Upstream's first check on every diff request.
fn validate(rpc: &str, left: &str, right: &str) -> Result<(), Status> {
    if left.is_empty() {
        return Err(Status::invalid_argument(format!("{rpc}: empty LeftCommitId")));
    }
    if right.is_empty() {
        return Err(Status::invalid_argument(format!("{rpc}: empty RightCommitId")));
    }
    Ok(())
}

#[tonic::async_trait]
impl DiffService for DiffSvc {
    async fn commit_diff(&self, r: Request<CommitDiffRequest>) -> Streamed<CommitDiffResponse> {
        commit_diff::commit_diff(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn commit_delta(&self, r: Request<CommitDeltaRequest>) -> Streamed<CommitDeltaResponse> {
        commit_diff::commit_delta(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn raw_diff(&self, r: Request<RawDiffRequest>) -> Streamed<RawDiffResponse> {
        raw::raw_diff(&self.0, r.into_inner()).map(Response::new)
    }

    async fn raw_patch(&self, r: Request<RawPatchRequest>) -> Streamed<RawPatchResponse> {
        raw::raw_patch(&self.0, r.into_inner()).map(Response::new)
    }

    async fn diff_stats(&self, r: Request<DiffStatsRequest>) -> Streamed<DiffStatsResponse> {
        stats::diff_stats(&self.0, r.into_inner()).await.map(Response::new)
    }
}
