//! Full-duplex pumping between a gRPC stream and a git child process.
//!
//! Packs are never held in memory: request chunks go to git's stdin as they arrive while git's stdout
//! and stderr are read concurrently into a bounded channel toward the client. A child that stops reading
//! its stdin (EPIPE) is not an error: the rest of the input is discarded and the child's exit status is
//! what counts, as upstream reports it.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use std::io::Write;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tonic::Status;

use crate::git::{ExitInfo, Running};
use crate::pktline::{Scanner, Seen};

/// Size of rgitaly-ssh's reads from its stdin (a push's pack), and so the largest message it sends.
pub const CHUNK: usize = 256 * 1024;

/// How many of rgitaly-ssh's messages may wait for the connection.
pub const CHANNEL_DEPTH: usize = 4;

/// Size of the reads from git's stdout, and so of the daemon's output messages (a clone's pack), and how
/// many may wait for the client before git is paused by back-pressure. A client that reads slowly costs
/// `OUT_DEPTH` chunks queued, one read and waiting for the queue, and one in the HTTP/2 stream's send
/// queue (sent as it is, `crate::bulk`): 384 KiB. (The reader does not reserve room before it reads: stderr shares the queue, and
/// a reservation held while git blocks on a full stderr pipe would stop both.) Measured with 50 clones at
/// once (`cargo bench --bench memory`): 256 KiB × 4 cost 75 MiB more than 128 KiB × 2, and each queued
/// chunk about 7 MiB. 64 KiB chunks would halve that again, but cost a clone through the daemon 1.33× the
/// CPU of git alone instead of 1.12× (`benches/transport.py`, median of 3), so chunks stay at 128 KiB.
pub const OUT_CHUNK: usize = 128 * 1024;
pub const OUT_DEPTH: usize = 1;

/// Most stderr kept for error messages when stderr is not forwarded.
const STDERR_KEEP: usize = 64 * 1024;

/// Reads a pipe in chunks, each a slice of one of a few buffers that are used again once the chunk cut
/// from them has been sent and dropped. A fresh allocation per chunk costs, at this size,
/// an `mmap` and a page fault per page every time (measured: about a tenth of rgitaly-ssh's CPU in a push).
/// Memory stays what is in flight: a buffer is kept only while its chunk is, plus one spare.
pub struct ReadBuffer {
    slots: Vec<BytesMut>,
    chunk: usize,
    most: usize,
}

/// rgitaly-ssh's reader: [`CHUNK`]s, as many buffers as its channel and the HTTP/2 stream hold and one
/// being read.
impl Default for ReadBuffer {
    fn default() -> ReadBuffer {
        ReadBuffer::new(CHUNK, CHANNEL_DEPTH + 2)
    }
}

impl ReadBuffer {
    /// Chunks of up to `chunk` bytes from at most `most` buffers.
    pub fn new(chunk: usize, most: usize) -> ReadBuffer {
        ReadBuffer { slots: Vec::new(), chunk, most }
    }

    /// The next chunk; `None` at the end of the input.
    pub async fn read<R: tokio::io::AsyncRead + Unpin>(&mut self, from: &mut R) -> std::io::Result<Option<Bytes>> {
        // A buffer whose last chunk is gone (or that has room left) is used again; of those, one more is
        // kept as a spare and the others freed, so a burst's buffers do not outlive it.
        let (chunk, mut free) = (self.chunk, 0);
        self.slots.retain_mut(|b| {
            if !b.try_reclaim(chunk) {
                return true;
            }
            free += 1;
            free <= 2
        });
        let idx = match self.slots.iter().position(|b| b.capacity() - b.len() >= chunk) {
            Some(i) => i,
            None => {
                if self.slots.len() >= self.most {
                    // All in flight: this one's memory goes when its chunk does.
                    self.slots.remove(0);
                }
                self.slots.push(BytesMut::with_capacity(chunk));
                self.slots.len() - 1
            }
        };
        let buf = &mut self.slots[idx];
        let n = from.read_buf(&mut buf.limit(chunk)).await?;
        Ok((n > 0).then(|| buf.split().freeze()))
    }
}

/// Most writer threads for git's stdin at once (see [`StdinWriter`]).
pub const STDIN_THREADS: usize = 16;

static STDIN_THREADS_USED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Writes a call's input to git's stdin.
///
/// A push's pack goes to `receive-pack`, which reads its input in small pieces: written from the runtime,
/// the writer would be woken (through epoll and the scheduler) for every piece git frees, so bulk input is
/// written from a thread of its own, blocking. Threads are bounded ([`STDIN_THREADS`]): calls past that,
/// and calls whose input is only a negotiation (upload-pack, upload-archive: a few packets), write from
/// the runtime and hold no thread.
enum StdinWriter {
    Thread(mpsc::Sender<Bytes>),
    Async(tokio::net::unix::pipe::Sender),
}

/// A writer thread's place among [`STDIN_THREADS`]; given back when the thread ends.
struct ThreadPlace;

impl ThreadPlace {
    fn take() -> Option<ThreadPlace> {
        use std::sync::atomic::Ordering::SeqCst;
        STDIN_THREADS_USED
            .fetch_update(SeqCst, SeqCst, |n| (n < STDIN_THREADS).then_some(n + 1))
            .ok()
            .map(|_| ThreadPlace)
    }
}

impl Drop for ThreadPlace {
    fn drop(&mut self) {
        STDIN_THREADS_USED.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl StdinWriter {
    fn start(pipe: tokio::net::unix::pipe::Sender, bulk: bool) -> Result<StdinWriter, Status> {
        let Some(place) = bulk.then(ThreadPlace::take).flatten() else { return Ok(StdinWriter::Async(pipe)) };
        // Non-blocking: the thread waits for room itself (`PipeFiller`).
        let fd = pipe.into_nonblocking_fd().map_err(|e| Status::internal(format!("stdin: {e}")))?;
        let (tx, mut rx) = mpsc::channel::<Bytes>(2);
        std::thread::Builder::new()
            .name("git-stdin".into())
            .spawn(move || {
                let _place = place;
                let mut pipe = PipeFiller::new(std::fs::File::from(fd));
                while let Some(buf) = rx.blocking_recv() {
                    if pipe.write_all(&buf).is_err() {
                        // The child stopped reading (EPIPE): its exit status will tell why.
                        break;
                    }
                }
            })
            .map_err(|e| Status::resource_exhausted(format!("start stdin writer: {e}")))?;
        Ok(StdinWriter::Thread(tx))
    }

    /// Fails once the child stopped reading.
    async fn write(&mut self, data: Bytes) -> Result<(), ()> {
        use tokio::io::AsyncWriteExt;
        match self {
            StdinWriter::Thread(tx) => tx.send(data).await.map_err(|_| ()),
            StdinWriter::Async(pipe) => pipe.write_all(&data).await.map_err(|_| ()),
        }
    }
}

/// Writes into a non-blocking pipe in large pieces. `receive-pack` reads its input 4 KiB at a time, and
/// a writer blocked on a full pipe is woken for each piece it frees: a push's pack then costs a context
/// switch per 4 KiB on each side (measured: most of the writer thread's CPU, and the reader's wakeups of
/// it a tenth of git's). So once the pipe is full the writer naps, reads how much git has left unread
/// (`FIONREAD`), and writes again only when a quarter of the pipe is free, while three quarters still
/// keep git busy; a child that stops reading for long makes the naps longer, up to [`PipeFiller::MAX_NAP`].
pub struct PipeFiller {
    pipe: std::fs::File,
    size: usize,
    /// Writes that put something in the pipe.
    pieces: usize,
}

impl PipeFiller {
    const MIN_NAP: Duration = Duration::from_micros(500);
    const MAX_NAP: Duration = Duration::from_millis(20);

    /// `pipe` must be a pipe's non-blocking write end.
    pub fn new(pipe: std::fs::File) -> PipeFiller {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on a descriptor `pipe` owns.
        let size = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_GETPIPE_SZ) };
        PipeFiller { pipe, size: usize::try_from(size).unwrap_or(0).max(4096), pieces: 0 }
    }

    /// Bytes written and not yet read; None when the kernel does not say.
    fn unread(&self) -> Option<usize> {
        use std::os::fd::AsRawFd;
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer.
        let rc = unsafe { libc::ioctl(self.pipe.as_raw_fd(), libc::FIONREAD, &mut n) };
        (rc == 0).then(|| usize::try_from(n).unwrap_or(0))
    }

    /// Whether the pipe has no reader left (the kernel reports an error condition on its write end).
    fn reader_gone(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut p = libc::pollfd { fd: self.pipe.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
        // SAFETY: poll of one descriptor this value owns, without waiting.
        let rc = unsafe { libc::poll(&mut p, 1, 0) };
        rc > 0 && p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
    }

    /// Waits until a quarter of the pipe is free, or the reader has gone (the next write says so).
    fn wait_for_room(&self) {
        let mut nap = Self::MIN_NAP;
        let mut last = None;
        loop {
            std::thread::sleep(nap);
            if self.reader_gone() {
                return;
            }
            let Some(unread) = self.unread() else { return };
            if unread <= self.size - self.size / 4 {
                return;
            }
            // No progress: the reader is busy elsewhere (a hook, its own output); ask less often.
            if last == Some(unread) {
                nap = (nap * 2).min(Self::MAX_NAP);
            }
            last = Some(unread);
        }
    }

    pub fn write_all(&mut self, mut buf: &[u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            match self.pipe.write(buf) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    self.pieces += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.wait_for_room(),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A chunk of output from the child.
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// Which packet ends negotiation on stdin.
#[derive(Debug, Clone, Copy)]
pub enum Watch {
    /// `done` (upload-pack).
    Done,
    /// A flush packet (upload-archive).
    Flush,
}

impl Watch {
    fn satisfied(self, seen: &Seen) -> bool {
        match self {
            Watch::Done => seen.done,
            Watch::Flush => seen.flush,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Kill the child if negotiation has not finished within this time.
    pub negotiation: Option<(Duration, Watch)>,
    /// Send stderr to the client; otherwise keep its tail for the error message.
    pub forward_stderr: bool,
}

/// How a pumped command ended.
#[derive(Debug)]
pub struct Finished {
    pub exit: ExitInfo,
    /// What the stdin scanner saw in the client's data.
    pub seen: Seen,
    /// The tail of stderr when it was not forwarded.
    pub stderr: Vec<u8>,
    pub negotiation_timed_out: bool,
}

impl Finished {
    /// The value upstream puts in `ExitStatus`: the exit code, or -1 when a signal ended the child.
    pub fn exit_status_value(&self) -> i32 {
        if self.exit.signal.is_some() {
            -1
        } else {
            self.exit.code
        }
    }
}

/// Returns the sender half for responses and the stream to hand to tonic.
pub fn response_channel<R: Send + 'static>() -> (mpsc::Sender<Result<R, Status>>, tonic::codegen::BoxStream<R>) {
    let (tx, rx) = mpsc::channel(OUT_DEPTH);
    (tx, Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// Runs `child` to completion: `input` into its stdin, stdout (and stderr if forwarded) out through `tx`
/// as `map` makes messages of them. Fails only when the client fails or goes away.
pub async fn run_duplex<I, R, F>(
    mut child: Running,
    input: I,
    opts: Options,
    tx: &mpsc::Sender<Result<R, Status>>,
    map: F,
) -> Result<Finished, Status>
where
    I: Stream<Item = Result<Bytes, Status>> + Send + Unpin,
    F: Fn(Output) -> R,
{
    let stdin = child.stdin.take();
    let mut stdout = child.stdout.take().expect("stdout piped");
    let mut stderr = child.stderr.take().expect("stderr piped");
    let killer = child.killer();
    // Shared with the stdin pump, which may still be running when the child is done.
    let seen_so_far = std::sync::Mutex::new(Seen::default());

    let mut writer = match stdin {
        Some(pipe) => Some(StdinWriter::start(pipe, opts.negotiation.is_none())?),
        None => None,
    };

    let timed_out = std::sync::atomic::AtomicBool::new(false);
    // The negotiation deadline runs on its own, so a client that sends but never reads cannot dodge it by
    // keeping the stdin pump blocked.
    let watchdog = async {
        if let Some((limit, watch)) = opts.negotiation {
            tokio::time::sleep(limit).await;
            if !watch.satisfied(&seen_so_far.lock().unwrap_or_else(|e| e.into_inner())) {
                timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
                killer.kill();
            }
        }
        futures::future::pending::<()>().await
    };

    let stdin_fut = async {
        let mut input = input;
        let mut scanner = Scanner::default();
        let mut client_error = None;
        while let Some(next) = input.next().await {
            match next {
                Err(e) => {
                    client_error = Some(e);
                    killer.kill();
                    break;
                }
                Ok(data) => {
                    scanner.feed(&data);
                    *seen_so_far.lock().unwrap_or_else(|e| e.into_inner()) = scanner.seen.clone();
                    if let Some(w) = writer.as_mut() {
                        if w.write(data).await.is_err() {
                            // The child stopped reading (EPIPE); keep draining the client's input.
                            writer = None;
                        }
                    }
                }
            }
        }
        // Dropping the writer closes git's stdin once everything queued is written.
        drop(writer);
        client_error
    };

    let stdout_fut = async {
        let mut buf = ReadBuffer::new(OUT_CHUNK, OUT_DEPTH + 2);
        loop {
            let Some(chunk) = buf.read(&mut stdout).await.map_err(|e| Status::internal(format!("read stdout: {e}")))?
            else {
                return Ok(());
            };
            if tx.send(Ok(map(Output::Stdout(chunk)))).await.is_err() {
                killer.kill();
                return Err(Status::cancelled("client went away"));
            }
        }
    };

    let stderr_fut = async {
        let mut kept = Vec::new();
        loop {
            let mut buf = Vec::with_capacity(32 * 1024);
            let n = stderr.read_buf(&mut buf).await.map_err(|e| Status::internal(format!("read stderr: {e}")))?;
            if n == 0 {
                return Ok(kept);
            }
            if opts.forward_stderr {
                if tx.send(Ok(map(Output::Stderr(buf.into())))).await.is_err() {
                    killer.kill();
                    return Err(Status::cancelled("client went away"));
                }
            } else {
                kept.extend_from_slice(&buf);
                if kept.len() > STDERR_KEEP {
                    kept.drain(..kept.len() - STDERR_KEEP);
                }
            }
        }
    };

    let io = async { tokio::join!(stdout_fut, stderr_fut) };
    tokio::pin!(stdin_fut);
    tokio::pin!(io);
    tokio::pin!(watchdog);
    let mut stdin_result = None;
    // Output ending means the child is done; a client that keeps its send side open must not hold us.
    let (out_res, err_res) = loop {
        tokio::select! {
            r = &mut stdin_fut, if stdin_result.is_none() => stdin_result = Some(r),
            r = &mut io => break r,
            _ = &mut watchdog => {}
        }
    };
    // If the child finished before the client closed its side, what it sent so far is all that mattered.
    let client_error = stdin_result.flatten();
    let negotiation_timed_out = timed_out.load(std::sync::atomic::Ordering::SeqCst);
    let seen = seen_so_far.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(e) = client_error {
        return Err(e);
    }
    out_res?;
    let stderr = err_res?;
    let exit = child.wait().await.map_err(|e| Status::internal(format!("cmd wait: {e}")))?;
    Ok(Finished { exit, seen, stderr, negotiation_timed_out })
}

/// Streams a finished-input command's stdout to the client; stderr is kept for the error message.
pub async fn run_output<R, F>(child: Running, tx: &mpsc::Sender<Result<R, Status>>, map: F) -> Result<Finished, Status>
where
    F: Fn(Output) -> R,
{
    run_duplex(child, futures::stream::empty(), Options::default(), tx, map).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A non-blocking pipe and its read end, as git's stdin.
    fn pipe() -> (std::fs::File, std::fs::File) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two new descriptors that the files then own.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) }, 0);
        use std::os::fd::FromRawFd;
        let (r, w) = unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) };
        // The read end blocks, as git's does.
        unsafe { libc::fcntl(fds[0], libc::F_SETFL, 0) };
        (r, w)
    }

    /// A reader taking 4 KiB at a time, as receive-pack does, gets every byte in order; the writer fills the
    /// pipe in pieces of at least a quarter of it, not a piece per read.
    #[test]
    fn a_pipe_filler_writes_everything_in_large_pieces() {
        use std::io::Read;
        let (mut r, w) = pipe();
        let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 253) as u8).collect();
        let reader = std::thread::spawn(move || {
            let (mut got, mut buf, mut reads) = (Vec::new(), [0u8; 4096], 0);
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    return (got, reads);
                }
                got.extend_from_slice(&buf[..n]);
                reads += 1;
            }
        });
        let mut filler = PipeFiller::new(w);
        let quarter = filler.size / 4;
        let chunks = data.chunks(1 << 20).count();
        for chunk in data.chunks(1 << 20) {
            filler.write_all(chunk).unwrap();
        }
        let pieces = filler.pieces;
        drop(filler);
        let (got, reads) = reader.join().unwrap();
        assert!(got == data, "the bytes arrive whole and in order");
        // Each wait for room ends with at least a quarter of the pipe free (a chunk's last piece may be
        // smaller), while the reader took 4 KiB at a time.
        assert!(pieces <= data.len() / quarter + 2 * chunks, "{pieces} pieces of a {} byte pipe", quarter * 4);
        assert!(reads >= data.len() / 4096);
    }

    /// A reader that goes away ends the writing with an error (EPIPE), not a hang.
    #[test]
    fn a_pipe_filler_stops_when_the_reader_is_gone() {
        let (r, w) = pipe();
        let mut filler = PipeFiller::new(w);
        let full = vec![0u8; filler.size * 2];
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(r);
        });
        let e = filler.write_all(&full).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
        closer.join().unwrap();
    }

    /// Chunks sent and dropped leave their buffer to the next read: the same memory comes back instead of
    /// a new allocation per chunk; chunks still held keep theirs, and the data is never mixed up.
    #[tokio::test]
    async fn read_buffers_are_reused_once_their_chunk_is_gone() {
        let data: Vec<u8> = (0..CHUNK * 20).map(|i| (i % 251) as u8).collect();
        let mut input = &data[..];
        let mut buf = ReadBuffer::default();
        let first = buf.read(&mut input).await.unwrap().unwrap();
        let addr = first.as_ptr();
        assert_eq!(first[..], data[..CHUNK]);
        drop(first);
        let mut held = Vec::new();
        for i in 1..20 {
            let chunk = buf.read(&mut input).await.unwrap().unwrap();
            assert_eq!(chunk[..], data[i * CHUNK..(i + 1) * CHUNK], "chunk {i}");
            if i < 10 {
                assert_eq!(chunk.as_ptr(), addr, "chunk {i} got a new buffer");
            } else {
                // Held chunks (a stalled client) keep their buffers; the reader never overwrites them.
                assert!(held.iter().all(|h: &Bytes| h.as_ptr() != chunk.as_ptr()), "chunk {i} reused a held buffer");
                held.push(chunk);
            }
        }
        assert!(buf.slots.len() <= CHANNEL_DEPTH + 2);
        for (i, h) in held.iter().enumerate() {
            assert_eq!(h[..], data[(i + 10) * CHUNK..(i + 11) * CHUNK]);
        }
        // Once the burst's chunks are gone, only the buffer in use and one spare stay.
        drop(held);
        assert!(buf.read(&mut input).await.unwrap().is_none());
        assert_eq!(buf.slots.len(), 2);
    }
}
