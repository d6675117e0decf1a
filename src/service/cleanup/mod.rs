//! CleanupService: ApplyBfgObjectMapStream. After a history rewrite (BFG or git filter-repo), GitLab
//! streams the map of old to new object ids; the GitLab-internal refs (keep-around, merge requests,
//! pipelines, environments) still pointing at an old commit are deleted, so the old objects can be
//! collected, and every mapping is answered with the new object's type, as upstream. Deletions are
//! compare-and-swap on the value read, and none happens unless the whole map is valid.

use std::collections::HashMap;

use futures::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::Ctx;
use crate::git::Sub;
use crate::proto::gitaly::apply_bfg_object_map_stream_response::Entry;
use crate::proto::gitaly::cleanup_service_server::CleanupService;
use crate::proto::gitaly::*;

/// GitLab's own ref namespaces, as upstream lists them.
const INTERNAL_REFS: [&str; 4] = ["refs/environments/", "refs/keep-around/", "refs/merge-requests/", "refs/pipelines/"];
/// git filter-repo's commit-map header line.
const FILTER_REPO_HEADER: &str = "old                                      new";
/// Entries per answer.
const ENTRIES_PER_MESSAGE: usize = 1000;
/// Longer than any map line ("<40 hex> <40 hex>").
const MAX_LINE: usize = 1024;

pub struct CleanupSvc(pub Ctx);

#[tonic::async_trait]
impl CleanupService for CleanupSvc {
    async fn apply_bfg_object_map_stream(
        &self,
        r: Request<Streaming<ApplyBfgObjectMapStreamRequest>>,
    ) -> Result<Response<BoxStream<ApplyBfgObjectMapStreamResponse>>, Status> {
        let mut input = r.into_inner();
        let first = input.message().await?.ok_or_else(|| Status::internal("empty request stream"))?;
        if first.repository.is_none() {
            return Err(Status::invalid_argument("first request: repository not set"));
        }
        let ctx = self.0.clone();
        let path = ctx.locator.repo_path(first.repository.as_ref())?;
        let table = internal_refs(&ctx, &path).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let result = apply(&ctx, &path, &table, first.object_map, &mut input, &tx).await;
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

/// Internal refs by the object they point at.
async fn internal_refs(ctx: &Ctx, path: &std::path::Path) -> Result<HashMap<String, Vec<Vec<u8>>>, Status> {
    let mut cmd = ctx.git.command(path, Sub::ForEachRef).flag("--format=%(objectname) %(refname)");
    for p in INTERNAL_REFS {
        cmd = cmd.trusted_arg(p);
    }
    let out = cmd.output().await.map_err(|e| Status::internal(e.to_string()))?;
    let mut table: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for line in out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let at = line.iter().position(|b| *b == b' ').ok_or_else(|| Status::internal("failed to parse git refs"))?;
        table.entry(String::from_utf8_lossy(&line[..at]).into_owned()).or_default().push(line[at + 1..].to_vec());
    }
    Ok(table)
}

type Sender = tokio::sync::mpsc::Sender<Result<ApplyBfgObjectMapStreamResponse, Status>>;

async fn apply(
    ctx: &Ctx,
    path: &std::path::Path,
    table: &HashMap<String, Vec<Vec<u8>>>,
    first: Vec<u8>,
    input: &mut Streaming<ApplyBfgObjectMapStreamRequest>,
    tx: &Sender,
) -> Result<(), Status> {
    let mut pending: Vec<u8> = first;
    let mut line_no = 0i64;
    let mut deletions: Vec<u8> = Vec::new();
    let mut done = false;
    while !done {
        let mut pairs: Vec<(String, String)> = Vec::new();
        match input.next().await {
            Some(m) => pending.extend_from_slice(&m?.object_map),
            None => done = true,
        }
        // Whole lines only; the rest waits for the next message (or the end).
        let cut = if done { pending.len() } else { pending.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) };
        if cut == 0 && pending.len() > MAX_LINE {
            return Err(Status::invalid_argument(format!("object map invalid at line {line_no}")));
        }
        let mut lines: Vec<u8> = pending.drain(..cut).collect();
        if lines.last() == Some(&b'\n') {
            lines.pop();
        }
        for line in lines.split(|b| *b == b'\n') {
            if lines.is_empty() {
                break;
            }
            let text = std::str::from_utf8(line).unwrap_or("");
            if text == FILTER_REPO_HEADER {
                line_no += 1;
                continue;
            }
            let hex = |s: &str| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit());
            match text.split_once(' ') {
                Some((old, new)) if hex(old) && hex(new) => {
                    if old != new {
                        pairs.push((old.to_ascii_lowercase(), new.to_ascii_lowercase()));
                    }
                }
                _ => return Err(Status::invalid_argument(format!("object map invalid at line {line_no}"))),
            }
            line_no += 1;
        }
        if pairs.is_empty() {
            continue;
        }
        let internal: Vec<bool> = pairs.iter().map(|(old, _)| table.contains_key(old)).collect();
        for ((old, _), is_internal) in pairs.iter().zip(&internal) {
            if *is_internal {
                for name in &table[old] {
                    deletions.extend_from_slice(b"delete ");
                    deletions.extend_from_slice(name);
                    deletions.push(0);
                    deletions.extend_from_slice(old.as_bytes());
                    deletions.push(0);
                }
            }
        }
        let (c, p) = (ctx.clone(), path.to_path_buf());
        let entries = crate::odb::blocking(move || {
            let repo = c.repos.open(&p)?;
            Ok(pairs
                .into_iter()
                .zip(internal)
                .map(|((old_oid, new_oid), is_internal)| {
                    let kind = if is_internal { ObjectType::Commit } else { object_type(&repo, &new_oid) };
                    Entry { r#type: kind as i32, old_oid, new_oid }
                })
                .collect::<Vec<_>>())
        })
        .await?;
        for chunk in entries.chunks(ENTRIES_PER_MESSAGE) {
            if tx.send(Ok(ApplyBfgObjectMapStreamResponse { entries: chunk.to_vec() })).await.is_err() {
                return Ok(());
            }
        }
    }
    if !deletions.is_empty() {
        ctx.git
            .command(path, Sub::UpdateRef)
            .flag("-z")
            .flag("--stdin")
            .output_with_stdin_to_end(deletions)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
    }
    Ok(())
}

fn object_type(repo: &gix::Repository, hex: &str) -> ObjectType {
    let Ok(id) = gix::ObjectId::from_hex(hex.as_bytes()) else { return ObjectType::Unknown };
    match crate::odb::header(repo, id) {
        Ok(Some((gix::object::Kind::Commit, _))) => ObjectType::Commit,
        Ok(Some((gix::object::Kind::Blob, _))) => ObjectType::Blob,
        Ok(Some((gix::object::Kind::Tree, _))) => ObjectType::Tree,
        Ok(Some((gix::object::Kind::Tag, _))) => ObjectType::Tag,
        _ => ObjectType::Unknown,
    }
}
