//! gRPC framing for the calls that carry packs, archives and blobs, without copying their bytes.
//!
//! tonic's codec copies every message twice on its way: the encoder writes it into one buffer per stream,
//! and `Streaming` copies each incoming HTTP/2 frame into another before decoding. For a clone or a push
//! that is two more passes over every byte, and for a daemon serving many large streams it is a second
//! buffer per stream held in h2's send queue. Here a response's bulk field (a `bytes::Bytes` already cut
//! from a read buffer) becomes its own HTTP/2 data frame after a small head (the gRPC prefix, the other
//! fields, the bulk field's key and length), and an incoming message that arrives whole in one frame is
//! decoded from a slice of that frame. Fields may come in any order on the wire, so the bulk field is
//! written last; every protobuf decoder accepts that.
//!
//! The request side keeps tonic's `Streaming` (the handlers' signature) and feeds it an empty placeholder
//! message per real one: the real bytes travel beside it, in order, to the decoder.
//!
//! Used by the daemon's bulk RPCs (`server::routes`) and by rgitaly-ssh's calls.

use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::TryStreamExt;
use http_body::Frame;
use prost::Message;
use tonic::body::Body;
use tonic::codec::{DecodeBuf, Decoder, Streaming};
use tonic::codegen::BoxStream;
use tonic::Status;

/// gRPC's message prefix: a compression flag and a big-endian length.
const PREFIX: usize = 5;

/// Bulk fields shorter than this are copied into the head's buffer: a separate frame for them costs more
/// than the copy.
const COPY_BELOW: usize = 8 * 1024;

/// Small messages are gathered up to this size before they are handed to h2, as tonic does.
const GATHER: usize = 32 * 1024;

/// A message with one field of bulk bytes that is sent without copying.
pub trait Bulk: Message + Default + Send + 'static {
    /// Moves the first non-empty bulk field out of the message (in `build.rs`'s order), with its field
    /// number.
    fn take_bulk(&mut self) -> Option<(u32, Bytes)>;
}

// One impl per message with bulk fields, generated from the protos' descriptors (`build.rs`).
include!(concat!(env!("OUT_DIR"), "/bulk.rs"));

/// Frames `msg` after what `buf` holds: the head is written into `buf`; a bulk field of at least
/// [`COPY_BELOW`] bytes is returned to be sent after it, unchanged.
fn encode<M: Bulk>(mut msg: M, buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, Status> {
    let bulk = msg.take_bulk();
    let rest = msg.encoded_len();
    let field = bulk.as_ref().map_or(0, |(tag, data)| {
        prost::encoding::key_len(*tag) + prost::encoding::encoded_len_varint(data.len() as u64)
    });
    let data_len = bulk.as_ref().map_or(0, |(_, d)| d.len());
    let len = rest + field + data_len;
    if len > max {
        return Err(Status::out_of_range(format!(
            "Error, encoded message length too large: found {len} bytes, the limit is: {max} bytes"
        )));
    }
    let inline = if data_len < COPY_BELOW { data_len } else { 0 };
    buf.reserve(PREFIX + rest + field + inline);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    msg.encode(buf).map_err(|e| Status::internal(format!("Error encoding: {e}")))?;
    let Some((tag, data)) = bulk else { return Ok(None) };
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, buf);
    prost::encoding::encode_varint(data.len() as u64, buf);
    if inline > 0 {
        buf.put_slice(&data);
        return Ok(None);
    }
    Ok(Some(data))
}

/// Which end of the call a body is sent from: a server ends with the status in trailers, a client just
/// ends.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    Server,
    Client,
}

/// The messages of `source` as an HTTP/2 body, bulk fields passed through as their own frames.
struct BulkBody<M> {
    source: Option<BoxStream<M>>,
    role: Role,
    max: usize,
    buf: BytesMut,
    /// A bulk field to send after `buf`.
    next: Option<Bytes>,
    /// How the stream ended, sent once `buf` is out.
    end: Option<Status>,
    done: bool,
}

impl<M> BulkBody<M> {
    fn new(source: BoxStream<M>, role: Role, max: usize) -> Self {
        BulkBody { source: Some(source), role, max, buf: BytesMut::new(), next: None, end: None, done: false }
    }

    fn flush(&mut self) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Poll::Ready(Some(Ok(Frame::data(self.buf.split().freeze()))))
    }
}

impl<M: Bulk> http_body::Body for BulkBody<M> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        loop {
            if let Some(data) = this.next.take() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(status) = this.end.take() {
                if !this.buf.is_empty() {
                    this.end = Some(status);
                    return this.flush();
                }
                this.done = true;
                this.source = None;
                return match this.role {
                    Role::Server => Poll::Ready(Some(Ok(Frame::trailers(trailers(status))))),
                    Role::Client if status.code() == tonic::Code::Ok => Poll::Ready(None),
                    Role::Client => Poll::Ready(Some(Err(status))),
                };
            }
            let Some(source) = this.source.as_mut() else { return Poll::Ready(None) };
            match source.as_mut().poll_next(cx) {
                Poll::Pending if this.buf.is_empty() => return Poll::Pending,
                Poll::Pending => return this.flush(),
                Poll::Ready(None) => this.end = Some(Status::ok("")),
                Poll::Ready(Some(Err(status))) => this.end = Some(status),
                Poll::Ready(Some(Ok(msg))) => match encode(msg, &mut this.buf, this.max) {
                    Err(status) => this.end = Some(status),
                    Ok(Some(data)) => {
                        this.next = Some(data);
                        return this.flush();
                    }
                    Ok(None) if this.buf.len() >= GATHER => return this.flush(),
                    Ok(None) => {}
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.next.is_none()
    }
}

/// The trailers that end a call with `status`, as tonic writes them.
fn trailers(status: Status) -> http::HeaderMap {
    let mut headers = status.into_http::<()>().into_parts().0.headers;
    headers.remove(http::header::CONTENT_TYPE);
    headers
}

/// Messages cut from a body, waiting for the decoder; poisoned once one failed to decode, after which
/// the stream ends (tonic's `Streaming` would otherwise decode the next message without its placeholder).
type Cut = Arc<Mutex<Queue>>;

#[derive(Default)]
struct Queue {
    messages: VecDeque<Pieces>,
    poisoned: bool,
}

fn queue(cut: &Cut) -> std::sync::MutexGuard<'_, Queue> {
    cut.lock().unwrap_or_else(|e| e.into_inner())
}

/// Most messages cut from a frame before their placeholders are handed on: a frame of a million tiny
/// messages is cut a batch at a time, as `Streaming` decodes them, not all at once.
const BATCH: usize = 64;

/// Zero-length message prefixes: `Streaming` decodes one placeholder per message cut.
static PLACEHOLDERS: [u8; PREFIX * BATCH] = [0; PREFIX * BATCH];

/// One message as the pieces of the frames it arrived in. Pieces of at least [`COPY_BELOW`] bytes are
/// slices of their frames (and so keep h2's buffer of that frame, which is bounded by the few messages a
/// call holds at once); smaller ones are copied together, so a message sent in tiny frames costs no more
/// than its length.
#[derive(Default)]
struct Pieces {
    parts: VecDeque<Bytes>,
    small: BytesMut,
    len: usize,
}

impl Pieces {
    fn push(&mut self, piece: Bytes) {
        self.len += piece.len();
        if piece.len() < COPY_BELOW {
            self.small.extend_from_slice(&piece);
            return;
        }
        if !self.small.is_empty() {
            self.parts.push_back(self.small.split().freeze());
        }
        self.parts.push_back(piece);
    }

    fn done(mut self) -> Self {
        if !self.small.is_empty() {
            self.parts.push_back(self.small.split().freeze());
        }
        self
    }
}

/// Decoding reads a field that lies within one piece as a slice of it (`copy_to_bytes`): the bulk field
/// sent as its own frame is never copied.
impl Buf for Pieces {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |p| &p[..])
    }

    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let front = self.parts.front_mut().expect("advance within remaining");
            if front.len() > n {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.parts.pop_front();
        }
    }

    fn copy_to_bytes(&mut self, n: usize) -> Bytes {
        assert!(n <= self.len, "copy_to_bytes past the end of a message");
        match self.parts.front_mut() {
            Some(front) if front.len() >= n => {
                self.len -= n;
                let out = front.split_to(n);
                if front.is_empty() {
                    self.parts.pop_front();
                }
                out
            }
            _ => {
                let mut out = BytesMut::with_capacity(n);
                out.put((&mut *self).take(n));
                out.freeze()
            }
        }
    }
}

/// Cuts the gRPC messages out of an incoming body, each as [`Pieces`] of the frames it came in, and passes
/// on an empty placeholder for each.
struct Cutter {
    body: Body,
    cut: Cut,
    /// What is left of the last frame, cut [`BATCH`] messages at a time.
    rest: Bytes,
    /// The prefix of the next message, as far as it has come.
    prefix: [u8; PREFIX],
    have: usize,
    /// The message being cut and how many of its bytes are still to come.
    message: Option<(Pieces, usize)>,
    max: usize,
    /// The end of tonic's error messages for this direction.
    while_: String,
    /// An error found after messages that are still to be handed on.
    error: Option<Status>,
}

impl Cutter {
    /// The length in a complete prefix, checked as tonic checks it.
    fn length(&self) -> Result<usize, Status> {
        let (p, max) = (&self.prefix, self.max);
        match p[0] {
            0 => {}
            1 => {
                return Err(Status::internal(
                    "protocol error: received message with compressed-flag but no grpc-encoding was specified",
                ))
            }
            f => {
                return Err(Status::internal(format!(
                    "protocol error: received message with invalid compression flag: {f} (valid flags are 0 and 1), {}",
                    self.while_
                )))
            }
        }
        let len = u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize;
        if len > max {
            return Err(Status::out_of_range(format!(
                "Error, decoded message length too large: found {len} bytes, the limit is: {max} bytes"
            )));
        }
        Ok(len)
    }

    /// Cuts up to [`BATCH`] messages from `rest`, counting them in `n`.
    fn cut(&mut self, n: &mut usize) -> Result<(), Status> {
        while *n < BATCH {
            if self.message.is_none() {
                let take = (PREFIX - self.have).min(self.rest.len());
                self.prefix[self.have..self.have + take].copy_from_slice(&self.rest[..take]);
                self.have += take;
                self.rest.advance(take);
                if self.have < PREFIX {
                    break;
                }
                self.have = 0;
                self.message = Some((Pieces::default(), self.length()?));
            }
            let Some((pieces, left)) = self.message.as_mut() else { unreachable!() };
            let take = (*left).min(self.rest.len());
            if take > 0 {
                pieces.push(self.rest.split_to(take));
                *left -= take;
            }
            if *left > 0 {
                break;
            }
            let (pieces, _) = self.message.take().unwrap_or_default();
            queue(&self.cut).messages.push_back(pieces.done());
            *n += 1;
            if self.rest.is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// Cuts what `rest` holds; the placeholders for what was cut, an error after them.
    fn batch(&mut self) -> Option<Result<Frame<Bytes>, Status>> {
        let mut n = 0;
        match self.cut(&mut n) {
            Ok(()) if n == 0 => None,
            Ok(()) => Some(Ok(Frame::data(Self::placeholders(n)))),
            Err(status) => {
                self.rest.clear();
                if n == 0 {
                    return Some(Err(status));
                }
                self.error = Some(status);
                Some(Ok(Frame::data(Self::placeholders(n))))
            }
        }
    }

    fn placeholders(n: usize) -> Bytes {
        Bytes::from_static(&PLACEHOLDERS[..n * PREFIX])
    }
}

impl http_body::Body for Cutter {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if let Some(status) = this.error.take() {
            return Poll::Ready(Some(Err(status)));
        }
        if queue(&this.cut).poisoned {
            return Poll::Ready(None);
        }
        loop {
            if !this.rest.is_empty() {
                if let Some(frame) = this.batch() {
                    return Poll::Ready(Some(frame));
                }
                continue;
            }
            match std::task::ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => this.rest = chunk,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(status)) => return Poll::Ready(Some(Err(status))),
                None if this.have > 0 || this.message.is_some() => {
                    return Poll::Ready(Some(Err(Status::internal("Unexpected EOF decoding stream."))))
                }
                None => return Poll::Ready(None),
            }
        }
    }
}

/// Decodes the messages the [`Cutter`] set aside, one per placeholder.
struct CutDecoder<M> {
    cut: Cut,
    _m: PhantomData<fn() -> M>,
}

impl<M: Message + Default + 'static> Decoder for CutDecoder<M> {
    type Item = M;
    type Error = Status;

    fn decode(&mut self, _placeholder: &mut DecodeBuf<'_>) -> Result<Option<M>, Status> {
        let mut queue = queue(&self.cut);
        if queue.poisoned {
            return Ok(None);
        }
        let pieces = queue.messages.pop_front();
        let decoded = match pieces {
            Some(pieces) => M::decode(pieces).map_err(|e| Status::internal(e.to_string())),
            None => Err(Status::internal("bulk decoder out of step")),
        };
        queue.poisoned = decoded.is_err();
        decoded.map(Some)
    }
}

/// `while_` ends tonic's messages for a bad prefix: "while sending request" or "while receiving response
/// with status: …".
fn cutter<M: Message + Default + 'static>(body: Body, max: usize, while_: String) -> (Cutter, CutDecoder<M>) {
    let cut = Cut::default();
    let cutter = Cutter {
        body,
        cut: cut.clone(),
        rest: Bytes::new(),
        prefix: [0; PREFIX],
        have: 0,
        message: None,
        max,
        while_,
        error: None,
    };
    (cutter, CutDecoder { cut, _m: PhantomData })
}

/// The client's messages as tonic's `Streaming`, decoded from slices of the frames they came in.
fn request_stream<M: Message + Default + Send + 'static>(body: Body, max: usize) -> Streaming<M> {
    let (cutter, decoder) = cutter::<M>(body, max, "while sending request".into());
    Streaming::new_request(decoder, cutter, None, Some(max))
}

/// Refuses a compressed request, as tonic does when no compression is enabled.
fn uncompressed(headers: &http::HeaderMap) -> Result<(), Status> {
    match headers.get("grpc-encoding").map(|v| v.as_bytes()) {
        None | Some(b"identity") => Ok(()),
        Some(other) => {
            let other = String::from_utf8_lossy(other);
            let mut status =
                Status::unimplemented(format!("Content is compressed with `{other}` which isn't supported"));
            status
                .metadata_mut()
                .insert("grpc-accept-encoding", tonic::metadata::MetadataValue::from_static("identity"));
            Err(status)
        }
    }
}

type Answer<M> = Result<tonic::Response<BoxStream<M>>, Status>;

fn respond<M: Bulk>(answer: Answer<M>, max: usize) -> http::Response<Body> {
    let answer = match answer {
        Ok(a) => a,
        Err(status) => return status.into_http(),
    };
    let (metadata, stream, extensions) = answer.into_parts();
    let mut headers = metadata.into_headers();
    for reserved in ["te", "content-type", "grpc-message", "grpc-message-type", "grpc-status"] {
        headers.remove(reserved);
    }
    headers.insert(http::header::CONTENT_TYPE, tonic::metadata::GRPC_CONTENT_TYPE);
    let mut res = http::Response::new(Body::new(BulkBody::new(stream, Role::Server, max)));
    *res.version_mut() = http::Version::HTTP_2;
    *res.headers_mut() = headers;
    *res.extensions_mut() = extensions;
    res
}

/// Serves a bidirectional (or client-streaming-in, server-streaming-out) call: `call` is the service's
/// handler.
pub async fn streaming<Req, Resp, F, Fut>(req: http::Request<Body>, max: usize, call: F) -> http::Response<Body>
where
    Req: Message + Default + Send + 'static,
    Resp: Bulk,
    F: FnOnce(tonic::Request<Streaming<Req>>) -> Fut,
    Fut: Future<Output = Answer<Resp>>,
{
    if let Err(status) = uncompressed(req.headers()) {
        return status.into_http();
    }
    let req = req.map(|body| request_stream::<Req>(body, max));
    respond(call(tonic::Request::from_http(req)).await, max)
}

/// Serves a call with one request message and a stream of responses.
pub async fn server_streaming<Req, Resp, F, Fut>(req: http::Request<Body>, max: usize, call: F) -> http::Response<Body>
where
    Req: Message + Default + Send + 'static,
    Resp: Bulk,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Answer<Resp>>,
{
    if let Err(status) = uncompressed(req.headers()) {
        return status.into_http();
    }
    let (parts, body) = req.into_parts();
    let mut messages = request_stream::<Req>(body, max);
    let message = match messages.try_next().await {
        Ok(Some(m)) => m,
        Ok(None) => return Status::internal("Missing request message.").into_http(),
        Err(status) => return status.into_http(),
    };
    let mut headers = parts.headers;
    match messages.trailers().await {
        Ok(Some(trailers)) => headers.extend(trailers.into_headers()),
        Ok(None) => {}
        Err(status) => return status.into_http(),
    }
    drop(messages);
    let metadata = tonic::metadata::MetadataMap::from_headers(headers);
    respond(call(tonic::Request::from_parts(metadata, parts.extensions, message)).await, max)
}

/// Calls a bidirectional method as a client: requests are framed as [`BulkBody`] frames them, responses
/// decoded from slices of their frames. `channel` adds the origin (and, intercepted, the token).
pub async fn call<S, B, Req, Resp>(
    channel: &mut S,
    path: &'static str,
    requests: BoxStream<Req>,
    max: usize,
) -> Result<Streaming<Resp>, Status>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>>,
    S::Error: Into<tonic::codegen::StdError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
    Req: Bulk,
    Resp: Message + Default + Send + 'static,
{
    use tower::ServiceExt;
    let mut req = http::Request::new(Body::new(BulkBody::new(requests, Role::Client, max)));
    *req.method_mut() = http::Method::POST;
    *req.version_mut() = http::Version::HTTP_2;
    *req.uri_mut() = http::Uri::from_static(path);
    req.headers_mut().insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    req.headers_mut().insert(http::header::CONTENT_TYPE, tonic::metadata::GRPC_CONTENT_TYPE);
    let svc = channel.ready().await.map_err(|e| Status::unavailable(e.into().to_string()))?;
    let res = svc.call(req).await.map_err(|e| Status::from_error(e.into()))?;
    uncompressed(res.headers())?;
    let status_code = res.status();
    // A call answered by headers alone has its status there ("trailers-only"): an error, or OK with no
    // message and no trailers to wait for.
    let trailers_only = Status::from_header_map(res.headers());
    if let Some(status) = &trailers_only {
        if status.code() != tonic::Code::Ok {
            return Err(status.clone());
        }
    }
    use http_body_util::BodyExt;
    let body = Body::new(res.into_body().map_err(|e| Status::from_error(e.into())));
    let (cutter, decoder) = cutter::<Resp>(body, max, format!("while receiving response with status: {status_code}"));
    Ok(match trailers_only {
        Some(_) => Streaming::new_empty(decoder, cutter),
        None => Streaming::new_response(decoder, cutter, status_code, None, Some(max)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::gitaly::*;
    use http_body_util::BodyExt;

    /// Every message the body of `msgs` puts on the wire, decoded by prost from the joined frames.
    async fn round_trip<M: Bulk + Clone + PartialEq + std::fmt::Debug>(msgs: Vec<M>) -> (Vec<M>, usize) {
        let source: BoxStream<M> = Box::pin(futures::stream::iter(msgs.into_iter().map(Ok)));
        let mut body = BulkBody::new(source, Role::Server, 64 << 20);
        let (mut wire, mut frames) = (Vec::new(), 0);
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                wire.extend_from_slice(&data);
                frames += 1;
            }
        }
        let mut out = Vec::new();
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
            out.push(M::decode(&rest[5..5 + len]).unwrap());
            rest = &rest[5 + len..];
        }
        (out, frames)
    }

    async fn same<M: Bulk + Clone + PartialEq + std::fmt::Debug>(msgs: Vec<M>) {
        let (got, _) = round_trip(msgs.clone()).await;
        assert_eq!(got, msgs);
    }

    fn big(n: usize) -> Bytes {
        Bytes::from((0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
    }

    #[tokio::test]
    async fn bulk_framing_decodes_as_prost_encodes() {
        let exit = Some(ExitStatus { value: 3 });
        same(vec![
            SshUploadPackResponse { stdout: big(100_000), stderr: big(10), exit_status: None },
            SshUploadPackResponse { stdout: Bytes::new(), stderr: big(20_000), exit_status: exit },
            SshUploadPackResponse::default(),
        ])
        .await;
        same(vec![SshReceivePackResponse { stdout: big(9000), stderr: big(3), exit_status: exit }]).await;
        same(vec![SshUploadArchiveResponse { stdout: big(1), stderr: big(70_000), exit_status: exit }]).await;
        let repo =
            Some(Repository { storage_name: "default".into(), relative_path: "a.git".into(), ..Default::default() });
        same(vec![SshUploadPackRequest { repository: repo.clone(), stdin: big(50_000), ..Default::default() }]).await;
        same(vec![SshReceivePackRequest {
            repository: repo.clone(),
            stdin: big(50_000),
            gl_id: "user-1".into(),
            ..Default::default()
        }])
        .await;
        same(vec![SshUploadArchiveRequest { repository: repo, stdin: big(50_000) }]).await;
        same(vec![PostUploadPackResponse { data: big(200_000) }, PostUploadPackResponse { data: big(5) }]).await;
        same(vec![PostReceivePackResponse { data: big(200_000) }]).await;
        same(vec![InfoRefsResponse { data: big(20_000) }]).await;
        same(vec![GetArchiveResponse { data: big(20_000) }]).await;
        same(vec![CreateBundleResponse { data: big(20_000) }]).await;
        same(vec![RawBlameResponse { data: big(20_000) }]).await;
        same(vec![RawDiffResponse { data: big(20_000) }]).await;
        same(vec![RawPatchResponse { data: big(20_000) }]).await;
        same(vec![GetBlobResponse { size: 300_000, data: big(131_072), oid: "ab".repeat(20) }]).await;
        same(vec![GetBlobsResponse {
            size: 9,
            data: big(9000),
            oid: "cd".repeat(20),
            path: b"a/b".to_vec(),
            ..Default::default()
        }])
        .await;
        same(vec![TreeEntryResponse {
            size: 9,
            data: big(9000),
            oid: "ef".repeat(20),
            mode: 0o100644,
            ..Default::default()
        }])
        .await;
    }

    #[tokio::test]
    async fn large_fields_travel_as_their_own_frames_small_ones_are_gathered() {
        let data = big(131_072);
        let (_, frames) = round_trip(vec![PostUploadPackResponse { data: data.clone() }]).await;
        assert_eq!(frames, 2, "head, then the data itself");
        let small: Vec<_> = (0..100).map(|_| PostUploadPackResponse { data: big(100) }).collect();
        let (got, frames) = round_trip(small.clone()).await;
        assert_eq!(got, small);
        assert_eq!(frames, 1, "100 small messages ready at once go out together");
        // The bulk frame is the caller's buffer, not a copy.
        let source: BoxStream<PostUploadPackResponse> =
            Box::pin(futures::stream::iter([Ok(PostUploadPackResponse { data: data.clone() })]));
        let mut body = BulkBody::new(source, Role::Server, 64 << 20);
        let _head = body.frame().await.unwrap().unwrap();
        let sent = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(sent.as_ptr(), data.as_ptr());
    }

    #[tokio::test]
    async fn oversized_answer_ends_the_call_with_its_status() {
        let source: BoxStream<GetBlobResponse> =
            Box::pin(futures::stream::iter([Ok(GetBlobResponse { data: big(2000), ..Default::default() })]));
        let mut body = BulkBody::new(source, Role::Server, 1000);
        let trailers = body.frame().await.unwrap().unwrap().into_trailers().unwrap();
        assert_eq!(trailers["grpc-status"], "11");
    }

    /// A body whose frames are `chunks`.
    fn body_of(chunks: Vec<Bytes>) -> Body {
        Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            chunks.into_iter().map(|c| Ok::<_, Status>(Frame::data(c))),
        )))
    }

    fn framed(msgs: &[PostReceivePackRequest]) -> Vec<u8> {
        let mut wire = Vec::new();
        for m in msgs {
            wire.push(0);
            wire.extend_from_slice(&(m.encoded_len() as u32).to_be_bytes());
            m.encode(&mut wire).unwrap();
        }
        wire
    }

    async fn decode_all(chunks: Vec<Bytes>, max: usize) -> Result<Vec<PostReceivePackRequest>, Status> {
        request_stream::<PostReceivePackRequest>(body_of(chunks), max).try_collect().await
    }

    #[tokio::test]
    async fn requests_decode_however_frames_cut_them() {
        let msgs: Vec<_> = [0usize, 1, 4, 5, 6, 300, 70_000, 3]
            .iter()
            .map(|&n| PostReceivePackRequest { data: big(n), gl_id: "k".into(), ..Default::default() })
            .collect();
        let wire = Bytes::from(framed(&msgs));
        for size in [1, 2, 4, 5, 6, 7, 100, 4096, 70_010, wire.len()] {
            let chunks: Vec<Bytes> = wire.chunks(size).map(Bytes::copy_from_slice).collect();
            assert_eq!(decode_all(chunks, 1 << 20).await.unwrap(), msgs, "frames of {size} bytes");
        }
        // A message that arrives whole is a slice of its frame.
        let one = PostReceivePackRequest { data: big(50_000), ..Default::default() };
        let frame = Bytes::from(framed(std::slice::from_ref(&one)));
        let got = decode_all(vec![frame.clone()], 1 << 20).await.unwrap();
        let inside = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        assert!(inside.contains(&(got[0].data.as_ptr() as usize)));
        // As `BulkBody` sends it: the head in one frame, the data in the next; the data is still not copied.
        let source: BoxStream<PostReceivePackRequest> = Box::pin(futures::stream::iter([Ok(one.clone())]));
        let mut body = BulkBody::new(source, Role::Client, 1 << 20);
        let mut frames = Vec::new();
        while let Some(f) = body.frame().await {
            frames.push(f.unwrap().into_data().unwrap());
        }
        assert_eq!(frames.len(), 2);
        let data = frames[1].clone();
        let got = decode_all(frames, 1 << 20).await.unwrap();
        assert_eq!(got, vec![one]);
        assert_eq!(got[0].data.as_ptr(), data.as_ptr());
    }

    #[tokio::test]
    async fn a_frame_of_many_tiny_messages_is_cut_a_batch_at_a_time() {
        let msgs: Vec<_> = (0..1000).map(|_| PostReceivePackRequest::default()).collect();
        let wire = Bytes::from(framed(&msgs));
        let (mut cutter, _decoder) = cutter::<PostReceivePackRequest>(body_of(vec![wire]), 1 << 20, String::new());
        let first = cutter.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.len(), BATCH * PREFIX);
        assert_eq!(queue(&cutter.cut).messages.len(), BATCH, "only one batch held");
        // The whole stream still decodes.
        assert_eq!(decode_all(vec![Bytes::from(framed(&msgs))], 1 << 20).await.unwrap().len(), 1000);
    }

    #[tokio::test]
    async fn messages_before_a_bad_prefix_are_delivered_then_the_error() {
        let good = PostReceivePackRequest { data: big(10), ..Default::default() };
        let mut wire = framed(&[good.clone(), good.clone()]);
        wire.extend_from_slice(&[7, 0, 0, 0, 0]);
        let mut s = request_stream::<PostReceivePackRequest>(body_of(vec![wire.into()]), 1 << 20);
        assert_eq!(s.message().await.unwrap(), Some(good.clone()));
        assert_eq!(s.message().await.unwrap(), Some(good));
        let err = s.message().await.unwrap_err();
        assert!(err.message().contains("invalid compression flag: 7"), "{}", err.message());
    }

    #[tokio::test]
    async fn a_message_that_does_not_decode_ends_the_stream() {
        let good = PostReceivePackRequest { data: big(10), ..Default::default() };
        let mut wire = vec![0, 0, 0, 0, 2, 0xff, 0xff];
        wire.extend_from_slice(&framed(&[good]));
        let mut s = request_stream::<PostReceivePackRequest>(body_of(vec![wire.into()]), 1 << 20);
        assert_eq!(s.message().await.unwrap_err().code(), tonic::Code::Internal);
        // Polled again, it ends rather than decoding the next message out of step.
        assert!(!matches!(s.message().await, Ok(Some(_))));
    }

    #[tokio::test]
    async fn hostile_request_frames_are_refused() {
        let msg = Bytes::from(framed(&[PostReceivePackRequest { data: big(2000), ..Default::default() }]));
        let err = decode_all(vec![msg.clone()], 1000).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange);
        let mut compressed = msg.to_vec();
        compressed[0] = 1;
        let err = decode_all(vec![compressed.into()], 1 << 20).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
        assert!(err.message().contains("compressed-flag"), "{}", err.message());
        let err = decode_all(vec![msg.slice(..msg.len() - 1)], 1 << 20).await.unwrap_err();
        assert_eq!(err.message(), "Unexpected EOF decoding stream.");
        let err = decode_all(vec![msg.slice(..3)], 1 << 20).await.unwrap_err();
        assert_eq!(err.message(), "Unexpected EOF decoding stream.");
        let garbage = Bytes::from_static(&[0, 0, 0, 0, 2, 0xff, 0xff]);
        let err = decode_all(vec![garbage], 1 << 20).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
    }
}
