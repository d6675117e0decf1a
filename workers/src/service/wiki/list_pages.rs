//! WikiGetAllPages (metadata and text of each page, then `end_of_page`) and WikiListPages (metadata only)
//! of the pages on the wiki's branch, as gollum lists them: sorted by title, which is git's tree order of
//! the paths, or by creation (the commit that added the file, followed through renames), either
//! direction, at most `limit` (0: all). WikiListPages' `offset` is ignored, as upstream's Ruby code does.

use std::collections::HashMap;

use rgitaly::git::{GitCmdFactory, Sub};
use rgitaly::proto::gitaly::*;
use tonic::codegen::BoxStream;
use tonic::Status;

use super::{chunks, page_text, Page, Snapshot, WIKI_REF};
use crate::service::{internal, Target};

async fn pages(
    git: &GitCmdFactory,
    t: &Target,
    created_at: bool,
    desc: bool,
    limit: u32,
) -> Result<Option<(Snapshot, Vec<Page>)>, Status> {
    let (snapshot, listed) = {
        let odb = crate::service::open(&t.repo)?;
        let Some(snapshot) = Snapshot::tip(&odb)? else { return Ok(None) };
        let listed: Vec<Page> = snapshot.listed(&odb)?.cloned().collect();
        (snapshot, listed)
    };
    let mut pages: Vec<Page> = if created_at {
        let listed: HashMap<&[u8], &Page> = listed.iter().map(|p| (p.path.as_slice(), p)).collect();
        let mut order = creation_order(git, t).await?;
        if !desc {
            order.reverse();
        }
        order.iter().filter_map(|path| listed.get(path.as_slice()).map(|p| (*p).clone())).collect()
    } else {
        let mut pages = listed;
        pages.sort_by(|a, b| a.path.cmp(&b.path));
        if desc {
            pages.reverse();
        }
        pages
    };
    if limit > 0 {
        pages.truncate(limit as usize);
    }
    Ok(Some((snapshot, pages)))
}

/// The files the branch's history added, newest first; a file renamed later under its final name.
async fn creation_order(git: &GitCmdFactory, t: &Target) -> Result<Vec<Vec<u8>>, Status> {
    let out = git
        .command(&t.repo, Sub::Log)
        .flag("--format=")
        .flag("--name-status")
        .flag("-M")
        .flag("-z")
        .flag("--diff-merges=first-parent")
        .trusted_arg(WIKI_REF)
        .output()
        .await
        .map_err(internal)?;
    let mut tokens = out.stdout.split(|b| *b == 0).filter(|t| !t.is_empty());
    let mut renamed: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut added = Vec::new();
    while let Some(status) = tokens.next() {
        let Some(path) = tokens.next() else { break };
        match status.first() {
            Some(b'R') | Some(b'C') => {
                let Some(new) = tokens.next() else { break };
                let last = renamed.get(new).cloned().unwrap_or_else(|| new.to_vec());
                if status[0] == b'R' {
                    renamed.insert(path.to_vec(), last);
                }
            }
            Some(b'A') => added.push(renamed.get(path).cloned().unwrap_or_else(|| path.to_vec())),
            _ => {}
        }
    }
    Ok(added)
}

pub async fn get_all_pages(
    git: &GitCmdFactory,
    t: &Target,
    req: WikiGetAllPagesRequest,
) -> Result<BoxStream<WikiGetAllPagesResponse>, Status> {
    let created_at = req.sort == wiki_get_all_pages_request::SortBy::CreatedAt as i32;
    let Some((snapshot, pages)) = pages(git, t, created_at, req.direction_desc, req.limit).await? else {
        return Ok(Box::pin(tokio_stream::empty()));
    };
    let repo = t.repo.clone();
    // Every page's text: read on a blocking thread (off the worker's two async threads) and sent as it is
    // read, at most a channel's worth ahead of the client, in batches of up to 64 KiB so that the encoder
    // finds many messages ready at once and writes large frames.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let mut out = Batches { tx, batch: Vec::new(), size: 0 };
        let run = |out: &mut Batches<_>| -> Result<(), Status> {
            let odb = crate::service::open(&repo)?;
            let version = snapshot.version(&odb)?;
            for page in &pages {
                let head = WikiGetAllPagesResponse { page: Some(page.proto(&version, false)), end_of_page: false };
                if !out.push(Ok(head), page.path.len()) {
                    return Ok(());
                }
                let text = page_text(&odb, page)?;
                for chunk in chunks(&text) {
                    let page = WikiPage { raw_data: chunk.to_vec(), ..Default::default() };
                    if !out.push(Ok(WikiGetAllPagesResponse { page: Some(page), end_of_page: false }), chunk.len()) {
                        return Ok(());
                    }
                }
                if !out.push(Ok(WikiGetAllPagesResponse { page: None, end_of_page: true }), 0) {
                    return Ok(());
                }
            }
            Ok(())
        };
        if let Err(e) = run(&mut out) {
            out.push(Err(e), 0);
        }
        out.flush();
    });
    use futures::StreamExt;
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx).flat_map(futures::stream::iter)))
}

/// Messages gathered into batches of about 64 KiB for a channel.
struct Batches<T> {
    tx: tokio::sync::mpsc::Sender<Vec<T>>,
    batch: Vec<T>,
    size: usize,
}

impl<T> Batches<T> {
    /// Adds a message of about `bytes` (plus a fixed overhead); false once the receiver is gone.
    fn push(&mut self, message: T, bytes: usize) -> bool {
        self.batch.push(message);
        self.size += bytes + 64;
        if self.size < 64 * 1024 {
            return true;
        }
        self.flush()
    }

    fn flush(&mut self) -> bool {
        self.size = 0;
        self.batch.is_empty() || self.tx.blocking_send(std::mem::take(&mut self.batch)).is_ok()
    }
}

pub async fn list_pages(
    git: &GitCmdFactory,
    t: &Target,
    req: WikiListPagesRequest,
) -> Result<BoxStream<WikiListPagesResponse>, Status> {
    let created_at = req.sort == wiki_list_pages_request::SortBy::CreatedAt as i32;
    let Some((snapshot, pages)) = pages(git, t, created_at, req.direction_desc, req.limit).await? else {
        return Ok(Box::pin(tokio_stream::empty()));
    };
    let odb = crate::service::open(&t.repo)?;
    let version = snapshot.version(&odb)?;
    let messages: Vec<_> =
        pages.iter().map(|p| Ok(WikiListPagesResponse { page: Some(p.proto(&version, false)) })).collect();
    Ok(Box::pin(tokio_stream::iter(messages)))
}
