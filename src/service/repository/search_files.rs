//! SearchFilesByName: the paths in a revision's tree under `query` (`git ls-tree --full-tree -r
//! --name-only <ref> -- <query>`, quoted as git quotes them), keeping those that match `filter` (a regular
//! expression of at most 1000 bytes), 20 paths per message, as upstream.

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::git::Sub;
use crate::proto::gitaly::{
    SearchFilesByContentRequest, SearchFilesByContentResponse, SearchFilesByNameRequest, SearchFilesByNameResponse,
};
use crate::service::chunk::DATA_CHUNK as CHUNK;
use crate::service::Context;

/// Upstream's limits: the filter's length, and paths per response.
const FILTER_MAX: usize = 1000;
const PER_MESSAGE: usize = 20;

pub async fn search_files_by_name(
    ctx: &Context,
    req: SearchFilesByNameRequest,
) -> Result<BoxStream<SearchFilesByNameResponse>, Status> {
    let problem = if req.query.is_empty() {
        Some("no query given")
    } else if req.r#ref.is_empty() {
        Some("no ref given")
    } else if req.r#ref.starts_with(b"-") {
        Some("invalid ref argument")
    } else {
        None
    };
    if let Some(p) = problem {
        return Err(Status::invalid_argument(p));
    }
    let filter = if req.filter.is_empty() {
        None
    } else if req.filter.len() > FILTER_MAX {
        return Err(Status::invalid_argument("SearchFilesByName: filter exceeds maximum length"));
    } else {
        Some(
            regex::bytes::Regex::new(&req.filter)
                .map_err(|e| Status::invalid_argument(format!("SearchFilesByName: filter did not compile: {e}")))?,
        )
    };
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let revision = String::from_utf8(req.r#ref).map_err(|_| Status::invalid_argument("invalid ref argument"))?;
    let out = ctx
        .git
        .command(&repo, Sub::LsTree)
        .flag("--full-tree")
        .flag("--name-status")
        .flag("-r")
        .user_arg(&revision)
        .path_arg(&req.query)
        .run_to_end()
        .await
        .map_err(|e| Status::internal(format!("SearchFilesByName: cmd start failed: {e}")))?;
    // A revision git does not know lists nothing, as upstream streams nothing then.
    let files: Vec<Vec<u8>> = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter(|l| filter.as_ref().is_none_or(|f| f.is_match(l)))
        .map(<[u8]>::to_vec)
        .collect();
    let messages: Vec<_> =
        files.chunks(PER_MESSAGE).map(|c| Ok(SearchFilesByNameResponse { files: c.to_vec() })).collect();
    Ok(Box::pin(tokio_stream::iter(messages)))
}

/// Lines of context around each match, as upstream.
const CONTEXT: &str = "2";

/// SearchFilesByContent: `git grep` (case-insensitive, Perl regular expression, binary files skipped,
/// two lines of context) of a revision, each match block streamed as it comes in 128 KiB pieces and ended
/// by `end_of_match`, as upstream. Output is never held whole: a repository full of matches costs one
/// block at a time.
pub async fn search_files_by_content(
    ctx: &Context,
    req: SearchFilesByContentRequest,
) -> Result<BoxStream<SearchFilesByContentResponse>, Status> {
    if req.query.is_empty() {
        return Err(Status::invalid_argument("no query given"));
    }
    if req.r#ref.is_empty() {
        return Err(Status::invalid_argument("no ref given"));
    }
    if req.r#ref.starts_with(b"-") {
        return Err(Status::invalid_argument("invalid ref argument"));
    }
    if req.query.contains('\0') {
        return Err(Status::invalid_argument("query contains a NUL byte"));
    }
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let revision = String::from_utf8(req.r#ref).map_err(|_| Status::invalid_argument("invalid ref argument"))?;
    let mut child = ctx
        .git
        .command(&repo, Sub::Grep)
        .flag("--ignore-case")
        .flag("-I")
        .flag("--line-number")
        .flag("--null")
        .flag(format!("--before-context={CONTEXT}"))
        .flag(format!("--after-context={CONTEXT}"))
        .flag("--perl-regexp")
        // The pattern stuck to its option: it can never be read as an option of its own.
        .flag(format!("-e{}", req.query))
        .user_arg(&revision)
        .spawn_no_stdin()
        .map_err(|e| Status::internal(format!("SearchFilesByContent: cmd start failed: {e}")))?;
    let stdout = child.stdout.take().ok_or_else(|| Status::internal("SearchFilesByContent: no output"))?;
    let mut stderr = child.stderr.take();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        // A client that goes away stops the search at once, even while git finds nothing to print.
        tokio::select! {
            finished = pump_matches(stdout, &tx) => {
                if !finished {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
        let mut err = Vec::new();
        if let Some(e) = stderr.as_mut() {
            let _ = tokio::io::AsyncReadExt::read_to_end(e, &mut err).await;
        }
        // 1 is "nothing matched"; anything else (an unknown revision, a bad pattern) is an error.
        match child.wait().await {
            Ok(exit) if exit.code == 0 || exit.code == 1 => {}
            Ok(exit) => {
                let msg = format!(
                    "SearchFilesByContent: git grep: exit status {}: {}",
                    exit.code,
                    String::from_utf8_lossy(&err).trim()
                );
                let _ = tx.send(Err(Status::internal(msg))).await;
            }
            Err(e) => {
                let _ = tx.send(Err(Status::internal(format!("SearchFilesByContent: {e}")))).await;
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// Streams `git grep`'s match blocks (separated by `--` lines) as they come: each block's data in pieces
/// of at most 128 KiB, then `end_of_match`. Reads at most one piece at a time, so a file of one enormous
/// line is never held whole. False when the client went away.
async fn pump_matches(
    stdout: impl tokio::io::AsyncRead + Unpin,
    tx: &tokio::sync::mpsc::Sender<Result<SearchFilesByContentResponse, Status>>,
) -> bool {
    use tokio::io::AsyncBufReadExt;
    let mut reader = tokio::io::BufReader::new(stdout);
    let mut block: Vec<u8> = Vec::new();
    let mut piece = Vec::new();
    let mut at_line_start = true;
    loop {
        piece.clear();
        let read = tokio::io::AsyncReadExt::take(&mut reader, CHUNK as u64).read_until(b'\n', &mut piece).await;
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(Err(Status::internal(format!("SearchFilesByContent: {e}")))).await;
                return false;
            }
        };
        let end = n == 0;
        let separator = at_line_start && piece == b"--\n";
        at_line_start = piece.ends_with(b"\n");
        if !end && !separator {
            block.extend_from_slice(&piece);
            while block.len() > CHUNK {
                let rest = block.split_off(CHUNK);
                let data = std::mem::replace(&mut block, rest);
                if tx.send(Ok(SearchFilesByContentResponse { match_data: data, ..Default::default() })).await.is_err() {
                    return false;
                }
            }
            continue;
        }
        if end && !block.is_empty() && !block.ends_with(b"\n") {
            block.push(b'\n');
        }
        if !block.is_empty() {
            let data = SearchFilesByContentResponse { match_data: std::mem::take(&mut block), ..Default::default() };
            let done = SearchFilesByContentResponse { end_of_match: true, ..Default::default() };
            if tx.send(Ok(data)).await.is_err() || tx.send(Ok(done)).await.is_err() {
                return false;
            }
        }
        if end {
            return true;
        }
    }
}
