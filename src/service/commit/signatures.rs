//! GetCommitSignatures and FilterShasWithSignatures: commit signatures read in-process from the raw
//! objects, split from the signed text the way upstream splits them.

use futures::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Status, Streaming};

use crate::proto::gitaly::{
    FilterShasWithSignaturesRequest, FilterShasWithSignaturesResponse, GetCommitSignaturesRequest,
    GetCommitSignaturesResponse,
};
use crate::service::chunk::send_pieces;
use crate::service::Ctx;

/// The `gpgsig` header (continuation lines unindented, last newline dropped) and the commit without it.
fn split_signature(raw: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (mut signature, mut signed) = (Vec::new(), Vec::new());
    let (mut in_signature, mut found, mut header_done) = (false, false, false);
    for line in raw.split_inclusive(|b| *b == b'\n') {
        if !header_done && !in_signature && !found && line.starts_with(b"gpgsig") {
            in_signature = true;
            found = true;
            signature.extend_from_slice(line[b"gpgsig".len()..].strip_prefix(b" ").unwrap_or(&line[b"gpgsig".len()..]));
            continue;
        }
        if in_signature {
            if line == b"\n" {
                in_signature = false;
                header_done = true;
                signed.extend_from_slice(line);
            } else if line.starts_with(b" ") {
                signature.extend_from_slice(&line[1..]);
            } else {
                in_signature = false;
                signed.extend_from_slice(line);
            }
            continue;
        }
        if line == b"\n" {
            header_done = true;
        }
        signed.extend_from_slice(line);
    }
    if !found {
        return None;
    }
    if signature.ends_with(b"\n") {
        signature.pop();
    }
    Some((signature, signed))
}

pub fn get_commit_signatures(
    ctx: &Ctx,
    req: GetCommitSignaturesRequest,
) -> Result<BoxStream<GetCommitSignaturesResponse>, Status> {
    if req.repository.is_none() {
        return Err(Status::invalid_argument("GetCommitSignatures: empty Repository"));
    }
    if req.commit_ids.is_empty() {
        return Err(Status::invalid_argument("GetCommitSignatures: empty CommitIds"));
    }
    for id in &req.commit_ids {
        crate::service::validate_object_id(id)
            .map_err(|e| Status::invalid_argument(format!("GetCommitSignatures: {}", e.message())))?;
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let c = ctx.clone();
    Ok(crate::odb::stream(move |out| async move {
        let repo = c.repos.open(&path)?;
        for id in &req.commit_ids {
            let oid = gix::ObjectId::from_hex(id.as_bytes()).map_err(|e| Status::internal(e.to_string()))?;
            let Some((gix::object::Kind::Commit, raw)) = crate::odb::read(&repo, oid)? else { continue };
            let Some((signature, signed)) = split_signature(&raw) else { continue };
            out.send(GetCommitSignaturesResponse { commit_id: id.clone(), signature, signed_text: Vec::new() }).await;
            let piece = |signed_text| GetCommitSignaturesResponse { signed_text, ..Default::default() };
            send_pieces(&signed, piece, &out).await;
        }
        Ok(())
    }))
}

/// One response per request: the shas whose commits are signed.
pub async fn filter_shas_with_signatures(
    ctx: &Ctx,
    mut stream: Streaming<FilterShasWithSignaturesRequest>,
) -> Result<BoxStream<FilterShasWithSignaturesResponse>, Status> {
    let first = crate::service::first_request(&mut stream).await?;
    if first.repository.is_none() {
        return Err(Status::invalid_argument("no repository given"));
    }
    let path = ctx.locator.repo_path(first.repository.as_ref())?;
    let c = ctx.clone();
    let requests = futures::stream::once(async move { Ok(first) }).chain(stream);
    let out = requests.then(move |r| {
        let (c, path) = (c.clone(), path.clone());
        async move {
            let req = r?;
            crate::odb::blocking(move || {
                let repo = c.repos.open(&path)?;
                let mut shas = Vec::new();
                for sha in req.shas {
                    let signed = crate::odb::find_commit(&repo, &sha)?.is_some_and(|c| c.signature_type != 0);
                    if signed {
                        shas.push(sha);
                    }
                }
                Ok(FilterShasWithSignaturesResponse { shas })
            })
            .await
        }
    });
    Ok(Box::pin(out))
}
