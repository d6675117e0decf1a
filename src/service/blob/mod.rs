//! BlobService: blobs by id or by revision and path, read in-process. RPCs not listed here answer
//! UNIMPLEMENTED.

pub mod data;
mod get_blob;
mod get_blobs;
mod lfs;

use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::Ctx;
use crate::proto::gitaly::blob_service_server::BlobService;
use crate::proto::gitaly::*;

pub struct BlobSvc(pub Ctx);

type Streamed<T> = Result<Response<BoxStream<T>>, Status>;

#[tonic::async_trait]
impl BlobService for BlobSvc {
    async fn get_blob(&self, r: Request<GetBlobRequest>) -> Streamed<GetBlobResponse> {
        get_blob::get_blob(&self.0, r.into_inner()).map(Response::new)
    }

    async fn get_lfs_pointers(&self, r: Request<GetLfsPointersRequest>) -> Streamed<GetLfsPointersResponse> {
        lfs::get_lfs_pointers(&self.0, r.into_inner()).map(Response::new)
    }

    async fn list_lfs_pointers(&self, r: Request<ListLfsPointersRequest>) -> Streamed<ListLfsPointersResponse> {
        lfs::list_lfs_pointers(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn list_all_lfs_pointers(
        &self,
        r: Request<ListAllLfsPointersRequest>,
    ) -> Streamed<ListAllLfsPointersResponse> {
        lfs::list_all_lfs_pointers(&self.0, r.into_inner()).await.map(Response::new)
    }

    async fn get_blobs(&self, r: Request<GetBlobsRequest>) -> Streamed<GetBlobsResponse> {
        get_blobs::get_blobs(&self.0, r.into_inner()).map(Response::new)
    }
}
