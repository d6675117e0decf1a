//! FindAllTags, FindTag, GetTagMessages: tags read in-process (annotated ones parsed as upstream does),
//! listed in `for-each-ref` order.

use tonic::codegen::BoxStream;
use tonic::Status;

use super::util::for_each_ref;
use crate::proto::gitaly::{
    FindAllTagsRequest, FindAllTagsResponse, FindTagRequest, FindTagResponse, GetTagMessagesRequest,
    GetTagMessagesResponse, Tag,
};
use crate::service::chunk::send_pieces;
use crate::service::chunk::Chunker;
use crate::service::Ctx;

const FORMAT: &str = "--format=%(objectname) %(objecttype) %(refname:lstrip=2)";

/// A `Tag` for one `oid type name` line.
fn tag_for_line(repo: &gix::Repository, line: &[u8]) -> Result<Tag, Status> {
    let mut parts = line.splitn(3, |b| *b == b' ');
    let (Some(oid), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Status::internal(format!(
            "invalid output from for-each-ref command: {}",
            String::from_utf8_lossy(line)
        )));
    };
    let id = gix::ObjectId::from_hex(oid).map_err(|e| Status::internal(e.to_string()))?;
    match kind {
        b"tag" => {
            crate::odb::read_tag(repo, id, name, true)?.ok_or_else(|| Status::internal("parsing tag: object not found"))
        }
        b"commit" => Ok(Tag {
            id: id.to_string(),
            name: name.to_vec(),
            target_commit: crate::odb::read_commit(repo, id)?,
            ..Default::default()
        }),
        _ => Ok(Tag { id: id.to_string(), name: name.to_vec(), ..Default::default() }),
    }
}

pub async fn find_all_tags(ctx: &Ctx, req: FindAllTagsRequest) -> Result<BoxStream<FindAllTagsResponse>, Status> {
    if req.repository.is_none() {
        return Err(Status::invalid_argument("empty Repository"));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let lines = for_each_ref(ctx, &path, &[FORMAT.into()], &[b"refs/tags/".to_vec()]).await?;
    let c = ctx.clone();
    Ok(crate::odb::stream(move |out| async move {
        let repo = c.repos.open(&path)?;
        let mut chunker = Chunker::default();
        for line in &lines {
            if let Some(tags) = chunker.push(tag_for_line(&repo, line)?) {
                out.send(FindAllTagsResponse { tags }).await;
            }
        }
        if let Some(tags) = chunker.finish() {
            out.send(FindAllTagsResponse { tags }).await;
        }
        Ok(())
    }))
}

pub async fn find_tag(ctx: &Ctx, req: FindTagRequest) -> Result<FindTagResponse, Status> {
    if req.repository.is_none() {
        return Err(Status::invalid_argument("repository is empty"));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    if req.tag_name.is_empty() {
        return Err(Status::invalid_argument("tag name is empty"));
    }
    let pattern = [b"refs/tags/".as_slice(), &req.tag_name].concat();
    let lines = for_each_ref(ctx, &path, &[FORMAT.into()], &[pattern]).await?;
    // for-each-ref also matches below a `/` (`v1` finds `v1/rc`); upstream's `git tag -l` takes the whole
    // name, so only an exact match counts unless the name is a pattern.
    let glob = req.tag_name.iter().any(|b| b"*?[".contains(b));
    let exact = |line: &Vec<u8>| glob || line.splitn(3, |b| *b == b' ').nth(2) == Some(req.tag_name.as_slice());
    let Some(line) = lines.into_iter().find(exact) else { return Err(Status::internal("no tag found")) };
    let c = ctx.clone();
    let tag = crate::odb::blocking(move || tag_for_line(&*c.repos.open(&path)?, &line)).await?;
    Ok(FindTagResponse { tag: Some(tag) })
}

pub fn get_tag_messages(ctx: &Ctx, req: GetTagMessagesRequest) -> Result<BoxStream<GetTagMessagesResponse>, Status> {
    if req.repository.is_none() {
        return Err(Status::invalid_argument("GetTagMessages: empty Repository"));
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let c = ctx.clone();
    Ok(crate::odb::stream(move |out| async move {
        let repo = c.repos.open(&path)?;
        for id in &req.tag_ids {
            let oid = crate::odb::resolve(&repo, id.as_bytes());
            let Some(raw) = oid.map(|o| crate::odb::read(&repo, o)).transpose()?.flatten() else {
                return Err(Status::internal("failed to get tag: object not found"));
            };
            let (gix::object::Kind::Tag, raw) = raw else {
                return Err(Status::internal(format!("failed to get tag: expected {id} to be a tag, got {}", raw.0)));
            };
            let (_, message) = crate::odb::commit::split_raw(&raw);
            out.send(GetTagMessagesResponse { tag_id: id.clone(), message: Vec::new() }).await;
            send_pieces(message, |message| GetTagMessagesResponse { tag_id: String::new(), message }, &out).await;
        }
        Ok(())
    }))
}
