//! GetLFSPointers, ListLFSPointers, ListAllLFSPointers: Git LFS pointer blobs, by id, reachable from
//! revisions (`git rev-list` walks), or anywhere in the repository; 100 per message. (v13.12 replaced
//! GetNewLFSPointers and GetAllLFSPointers with the two List RPCs.)

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::git::Sub;
use crate::proto::gitaly::{
    GetLfsPointersRequest, GetLfsPointersResponse, LfsPointer, ListAllLfsPointersRequest, ListAllLfsPointersResponse,
    ListLfsPointersRequest, ListLfsPointersResponse,
};
use crate::service::Ctx;

const PER_MESSAGE: usize = 100;
/// Pointers are small: larger blobs are not looked at when listing (upstream's `lfsPointerMaxSize`).
const MAX_POINTER_SIZE: u64 = 200;
/// No blob larger than this is read to test it: a pointer, even with extension lines, is far smaller.
const MAX_READ: u64 = 1024;

/// Upstream's test: the spec line first, then an `oid sha256:<64 hex>` line and a `size <digits>` line.
pub fn is_lfs_pointer(data: &[u8]) -> bool {
    if !data.starts_with(b"version https://git-lfs.github.com/spec") {
        return false;
    }
    let lines = || data.split(|b| *b == b'\n');
    let oid = lines().any(|l| {
        l.strip_prefix(b"oid sha256:")
            .is_some_and(|h| h.len() == 64 && h.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)))
    });
    let size =
        lines().any(|l| l.strip_prefix(b"size ").is_some_and(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit)));
    oid && size
}

/// Streams the pointers among `ids` (in order), `limit` > 0 stopping early.
fn stream_pointers<T: Send + 'static>(
    ctx: &Ctx,
    path: std::path::PathBuf,
    ids: Vec<String>,
    missing_is_error: bool,
    limit: i32,
    wrap: fn(Vec<LfsPointer>) -> T,
) -> BoxStream<T> {
    let c = ctx.clone();
    crate::odb::stream(move |out| async move {
        let repo = c.repos.open(&path)?;
        let (mut batch, mut found) = (Vec::new(), 0);
        for id in &ids {
            let object = crate::odb::resolve(&repo, id.as_bytes()).map(|oid| (oid, crate::odb::header(&repo, oid)));
            let oid = match object {
                Some((oid, Ok(Some((gix::object::Kind::Blob, size))))) if size <= MAX_READ => oid,
                Some((_, Err(e))) => return Err(e),
                None | Some((_, Ok(None))) if missing_is_error => {
                    return Err(Status::unknown("could not get LFS pointer info: object not found"))
                }
                _ => continue,
            };
            let Some((_, data)) = crate::odb::read(&repo, oid)? else { continue };
            if !is_lfs_pointer(&data) {
                continue;
            }
            batch.push(LfsPointer { size: data.len() as i64, data, oid: oid.to_string() });
            found += 1;
            if batch.len() >= PER_MESSAGE {
                out.send(wrap(std::mem::take(&mut batch))).await;
            }
            if limit > 0 && found >= limit {
                break;
            }
        }
        if !batch.is_empty() {
            out.send(wrap(batch)).await;
        }
        Ok(())
    })
}

pub fn get_lfs_pointers(ctx: &Ctx, req: GetLfsPointersRequest) -> Result<BoxStream<GetLfsPointersResponse>, Status> {
    if req.repository.is_none() {
        return Err(Status::invalid_argument("GetLFSPointers: empty Repository"));
    }
    if req.blob_ids.is_empty() {
        return Err(Status::invalid_argument("GetLFSPointers: empty BlobIds"));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    Ok(stream_pointers(ctx, path, req.blob_ids, true, 0, |lfs_pointers| GetLfsPointersResponse { lfs_pointers }))
}

pub async fn list_lfs_pointers(
    ctx: &Ctx,
    req: ListLfsPointersRequest,
) -> Result<BoxStream<ListLfsPointersResponse>, Status> {
    if req.repository.is_none() {
        return Err(Status::invalid_argument("empty repository"));
    }
    if req.revisions.is_empty() {
        return Err(Status::invalid_argument("missing revisions"));
    }
    for r in &req.revisions {
        if r.starts_with('-') && r != "--all" && r != "--not" {
            return Err(Status::invalid_argument(format!("invalid revision: {r:?}")));
        }
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let mut cmd = ctx
        .git
        .command(&path, Sub::RevList)
        .flag("--in-commit-order")
        .flag("--objects")
        .flag("--no-object-names")
        .flag(format!("--filter=blob:limit={}", MAX_POINTER_SIZE + 1));
    for r in &req.revisions {
        cmd = if r == "--all" || r == "--not" { cmd.flag(r) } else { cmd.user_arg(r) };
    }
    let out = cmd.run_to_end().await?;
    if !out.exit.success() {
        return Err(Status::internal(format!(
            "rev-list failed: exit status {}, stderr: {:?}",
            out.exit.code,
            out.stderr_text()
        )));
    }
    let ids = out.stdout_text().lines().map(str::to_string).collect();
    Ok(stream_pointers(ctx, path, ids, false, req.limit, |lfs_pointers| ListLfsPointersResponse { lfs_pointers }))
}

pub async fn list_all_lfs_pointers(
    ctx: &Ctx,
    req: ListAllLfsPointersRequest,
) -> Result<BoxStream<ListAllLfsPointersResponse>, Status> {
    if req.repository.is_none() {
        return Err(Status::invalid_argument("empty repository"));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let out = ctx
        .git
        .command(&path, Sub::CatFile)
        .flag("--batch-all-objects")
        .flag("--batch-check=%(objecttype) %(objectsize) %(objectname)")
        .flag("--buffer")
        .flag("--unordered")
        .run_to_end()
        .await?;
    if !out.exit.success() {
        return Err(Status::internal(format!("could not read LFS pointers: exit status {}", out.exit.code)));
    }
    let ids = out
        .stdout_text()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let (kind, size, oid) = (f.next()?, f.next()?.parse::<u64>().ok()?, f.next()?);
            (kind == "blob" && size <= MAX_POINTER_SIZE).then(|| oid.to_string())
        })
        .collect();
    Ok(stream_pointers(ctx, path, ids, false, req.limit, |lfs_pointers| ListAllLfsPointersResponse { lfs_pointers }))
}
