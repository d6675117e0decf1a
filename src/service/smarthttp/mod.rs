//! SmartHTTPService: the stateless-rpc halves of git's smart HTTP protocol, for workhorse. Each call is
//! one request/response exchange streamed through `git {upload,receive}-pack --stateless-rpc`.

mod inforefs;
mod receive_pack;
mod upload_pack;

use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::Ctx;
use crate::proto::gitaly::{
    smart_http_service_server::SmartHttpService, InfoRefsRequest, InfoRefsResponse, PostReceivePackRequest,
    PostReceivePackResponse, PostUploadPackRequest, PostUploadPackResponse,
};

pub struct SmartHttpSvc(pub Ctx);

#[tonic::async_trait]
impl SmartHttpService for SmartHttpSvc {
    async fn info_refs_upload_pack(
        &self,
        req: Request<InfoRefsRequest>,
    ) -> Result<Response<BoxStream<InfoRefsResponse>>, Status> {
        inforefs::info_refs(&self.0, req.into_inner(), inforefs::Service::UploadPack).await.map(Response::new)
    }

    async fn info_refs_receive_pack(
        &self,
        req: Request<InfoRefsRequest>,
    ) -> Result<Response<BoxStream<InfoRefsResponse>>, Status> {
        inforefs::info_refs(&self.0, req.into_inner(), inforefs::Service::ReceivePack).await.map(Response::new)
    }

    async fn post_upload_pack(
        &self,
        req: Request<Streaming<PostUploadPackRequest>>,
    ) -> Result<Response<BoxStream<PostUploadPackResponse>>, Status> {
        upload_pack::post_upload_pack(&self.0, req.into_inner()).await.map(Response::new)
    }

    async fn post_receive_pack(
        &self,
        req: Request<Streaming<PostReceivePackRequest>>,
    ) -> Result<Response<BoxStream<PostReceivePackResponse>>, Status> {
        receive_pack::post_receive_pack(&self.0, req.into_inner()).await.map(Response::new)
    }
}
