//! NamespaceService: directories of a storage that group repositories (GitLab's groups on legacy
//! storage). Upstream joins the client's name to the storage root unchecked, so `..` or `.` could name
//! any directory, or the storage itself, for `RemoveNamespace` to delete; here every name goes through
//! the locator's path checks first (`InvalidArgument`).

use tonic::{Request, Response, Status};

use super::Ctx;
use crate::proto::gitaly::namespace_service_server::NamespaceService;
use crate::proto::gitaly::*;

pub struct NamespaceSvc(pub Ctx);

type Unary<T> = Result<Response<T>, Status>;

fn no_name() -> Status {
    Status::invalid_argument("Name: cannot be empty")
}

impl NamespaceSvc {
    fn path(&self, storage: &str, name: &str) -> Result<std::path::PathBuf, Status> {
        self.0.locator.storage_path(storage)?;
        if name.is_empty() {
            return Err(no_name());
        }
        Ok(self.0.locator.namespace_path(storage, name)?)
    }
}

#[tonic::async_trait]
impl NamespaceService for NamespaceSvc {
    async fn add_namespace(&self, r: Request<AddNamespaceRequest>) -> Unary<AddNamespaceResponse> {
        let req = r.into_inner();
        let path = self.path(&req.storage_name, &req.name)?;
        std::fs::create_dir_all(&path).map_err(|e| Status::internal(format!("create directory: {e}")))?;
        Ok(Response::new(AddNamespaceResponse {}))
    }

    async fn remove_namespace(&self, r: Request<RemoveNamespaceRequest>) -> Unary<RemoveNamespaceResponse> {
        let req = r.into_inner();
        let path = self.path(&req.storage_name, &req.name)?;
        let removed = tokio::task::spawn_blocking(move || match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        removed.map_err(|e| Status::internal(format!("removal: {e}")))?;
        Ok(Response::new(RemoveNamespaceResponse {}))
    }

    async fn rename_namespace(&self, r: Request<RenameNamespaceRequest>) -> Unary<RenameNamespaceResponse> {
        let req = r.into_inner();
        if req.from.is_empty() || req.to.is_empty() {
            return Err(Status::invalid_argument("from and to cannot be empty"));
        }
        let from = self.path(&req.storage_name, &req.from)?;
        let to = self.path(&req.storage_name, &req.to)?;
        if std::fs::metadata(&to).is_ok_and(|m| m.is_dir()) {
            return Err(Status::invalid_argument(format!("to directory {} already exists", req.to)));
        }
        if to.starts_with(&from) {
            return Err(Status::invalid_argument(format!("to directory {} is inside {}", req.to, req.from)));
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Status::internal(format!("create directory: {e}")))?;
        }
        crate::service::repository::rename_no_replace(&from, &to).map_err(|e| match e {
            nix::errno::Errno::ENOENT => Status::invalid_argument(format!("from directory {} not found", req.from)),
            nix::errno::Errno::EEXIST => Status::invalid_argument(format!("to directory {} already exists", req.to)),
            e => Status::internal(format!("rename: {e}")),
        })?;
        Ok(Response::new(RenameNamespaceResponse {}))
    }

    async fn namespace_exists(&self, r: Request<NamespaceExistsRequest>) -> Unary<NamespaceExistsResponse> {
        let req = r.into_inner();
        let path = self.path(&req.storage_name, &req.name)?;
        let exists = match std::fs::metadata(&path) {
            Ok(m) => m.is_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Status::internal(format!("could not stat the directory: {e}"))),
        };
        Ok(Response::new(NamespaceExistsResponse { exists }))
    }
}
