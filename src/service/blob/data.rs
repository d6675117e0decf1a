//! Blob data for GetBlob, GetBlobs and TreeEntry, sent without holding a thread or the whole blob.
//!
//! Reading a blob in-process inflates all of it, whatever the limit; and a producer on a read thread that
//! waits for a client that stopped reading keeps that thread. So only small blobs are read in-process (one
//! inflate costs less than a process start); larger ones come from `git cat-file blob`, which streams loose
//! and undeltified packed blobs from disk: a limit reads only what is sent, the daemon holds one piece at a
//! time, and a client that stops reading stops git through the pipe. The sending side is async: a stalled
//! or cancelled call parks a task, not a thread, and dropping it kills git.

use std::future::Future;
use std::path::Path;

use bytes::Bytes;
use gix::ObjectId;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tonic::codegen::BoxStream;
use tonic::Status;

use crate::git::Sub;
use crate::service::chunk::DATA_CHUNK;
use crate::service::Ctx;

/// Largest blob read in-process.
pub const INLINE_MAX: u64 = 256 * 1024;

/// Where the bytes to send come from.
pub enum Data {
    Inline(Vec<u8>),
    /// The first `length` bytes of blob `id`, from git.
    Git {
        id: ObjectId,
        length: u64,
    },
}

impl Data {
    /// The first `length` bytes of blob `id` (`size` bytes long). On a read thread: small blobs are read here.
    pub fn plan(repo: &gix::Repository, id: ObjectId, size: u64, length: u64) -> Result<Data, Status> {
        let length = length.min(size);
        if length == 0 {
            Ok(Data::Inline(Vec::new()))
        } else if size <= INLINE_MAX {
            crate::odb::blob_prefix(repo, id, size, length).map(Data::Inline)
        } else {
            Ok(Data::Git { id, length })
        }
    }
}

/// Largest blob GetBlob reads on the async thread when the call names it by id or ref: finding and
/// inflating 16 KiB takes tens of microseconds, less than handing the call to a read thread and back (two
/// wake-ups), and the answer is sent without a task behind it. (TreeEntry does not: the trees on its path
/// are read whole, and a directory of tens of thousands of entries would hold the async thread.)
pub const POINT_MAX: u64 = 16 * 1024;

/// The responses for `first` and the inline `bytes` (128 KiB pieces, the first on `first`), as a stream
/// with nothing behind it.
pub fn ready<T: Default + Send + 'static>(first: T, bytes: Vec<u8>, set: fn(&mut T, Bytes)) -> BoxStream<T> {
    let mut messages = Vec::with_capacity(bytes.len().div_ceil(DATA_CHUNK).max(1));
    let mut first = Some(first);
    let mut pieces = pieces(bytes.into());
    loop {
        let piece = pieces.next();
        if piece.is_none() && first.is_none() {
            break;
        }
        let mut m = first.take().unwrap_or_default();
        set(&mut m, piece.unwrap_or_default());
        messages.push(Ok(m));
    }
    Box::pin(tokio_stream::iter(messages))
}

/// `bytes` in [`DATA_CHUNK`] pieces, each a slice of it.
fn pieces(bytes: Bytes) -> impl Iterator<Item = Bytes> {
    (0..bytes.len()).step_by(DATA_CHUNK).map(move |at| bytes.slice(at..(at + DATA_CHUNK).min(bytes.len())))
}

/// A read in the handler that failed, as a stream whose first item is the error, as when the read runs on
/// a task ([`respond`]): the call looks the same whichever way it was read.
pub fn failed<T: Send + 'static>(e: Status) -> BoxStream<T> {
    Box::pin(tokio_stream::once(Err(e)))
}

/// A response stream fed by `f` on a task; an error from `f` ends the stream with it.
pub fn respond<T, F, Fut>(f: F) -> BoxStream<T>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    // One piece waiting for the client (and one being read) is enough to keep the connection busy;
    // anything more is memory a stalled client holds.
    let (tx, rx) = mpsc::channel(1);
    let out: BoxStream<T> = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
    let run = f(tx.clone());
    tokio::spawn(async move {
        if let Err(e) = run.await {
            let _ = tx.send(Err(e)).await;
        }
    });
    out
}

/// Sends `data` in 128 KiB pieces, the first riding on `first` (which carries the metadata); `first` alone
/// when there is no data. `Ok(false)` once the client has gone.
pub async fn send<T: Default>(
    ctx: &Ctx,
    repo: &Path,
    first: T,
    data: Data,
    set: fn(&mut T, Bytes),
    tx: &mpsc::Sender<Result<T, Status>>,
) -> Result<bool, Status> {
    let mut first = Some(first);
    let mut put = |piece: Bytes| {
        let mut m = first.take().unwrap_or_default();
        set(&mut m, piece);
        m
    };
    match data {
        Data::Inline(bytes) if bytes.is_empty() => Ok(tx.send(Ok(put(Bytes::new()))).await.is_ok()),
        Data::Inline(bytes) => {
            for piece in pieces(bytes.into()) {
                if tx.send(Ok(put(piece))).await.is_err() {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Data::Git { id, length } => {
            let mut git =
                ctx.git.command(repo, Sub::CatFile).flag("blob").trusted_arg(id.to_string()).spawn_no_stdin()?;
            let mut stdout = git.stdout.take().ok_or_else(|| Status::internal("cat-file: no stdout"))?;
            let mut left = length as usize;
            while left > 0 {
                // Room first, then the read: a piece never waits in our hands for the queue.
                let Ok(room) = tx.reserve().await else { return Ok(false) };
                let mut piece = vec![0u8; left.min(DATA_CHUNK)];
                let mut filled = 0;
                while filled < piece.len() {
                    let n = stdout
                        .read(&mut piece[filled..])
                        .await
                        .map_err(|e| Status::internal(format!("read blob {id}: {e}")))?;
                    if n == 0 {
                        return Err(Status::internal(format!(
                            "read blob {id}: ended after {} of {length} bytes",
                            length as usize - left + filled
                        )));
                    }
                    filled += n;
                }
                left -= filled;
                room.send(Ok(put(piece.into())));
            }
            // Whatever git has not written yet is not wanted: dropping it stops git.
            Ok(true)
        }
    }
}
