//! Looking at a call's first request message without consuming it: the limiter keys on the repository
//! and the worker proxy resolves it, while the bytes still go on, untouched, to whoever serves the call.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use prost::Message;
use tonic::body::Body;
use tonic::Status;

use crate::proto::gitaly::Repository;

/// What was read of a request body: the first message (prefix and payload) and anything after it.
pub struct Peeked {
    pub bytes: Bytes,
    /// Length of the first message's payload.
    pub len: usize,
}

impl Peeked {
    pub fn message(&self) -> Bytes {
        self.bytes.slice(5..5 + self.len)
    }
}

/// Reads the body until it holds the first gRPC message. On error, returns what was read so far too, so
/// the caller can still pass the call on and let its handler answer.
pub async fn first_message(body: &mut Body) -> Result<Peeked, (Status, Bytes)> {
    let mut buf = BytesMut::new();
    loop {
        if buf.len() >= 5 {
            if buf[0] != 0 {
                return Err((Status::unimplemented("compressed request messages are not supported"), buf.freeze()));
            }
            let len = (&buf[1..5]).get_u32() as usize;
            if len > crate::transport::MAX_MESSAGE {
                return Err((Status::resource_exhausted("request message too large"), buf.freeze()));
            }
            if buf.len() >= 5 + len {
                return Ok(Peeked { bytes: buf.freeze(), len });
            }
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => return Err((e, buf.freeze())),
            None if buf.is_empty() => return Err((Status::invalid_argument("empty request stream"), buf.freeze())),
            None => return Err((Status::invalid_argument("truncated request message"), buf.freeze())),
        }
    }
}

/// Field 1 of a message, as a repository: where nearly every Gitaly request keeps it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RepositoryField {
    #[prost(message, optional, tag = "1")]
    pub repository: Option<Repository>,
}

/// The repository in field 1 of a request message, if it decodes as one.
pub fn repository_field(msg: &[u8]) -> Option<Repository> {
    RepositoryField::decode(msg).ok().and_then(|f| f.repository)
}

/// A request body with what was peeked put back in front.
pub struct Replay {
    pub first: Option<Bytes>,
    pub rest: Body,
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        if let Some(first) = self.first.take().filter(|b| !b.is_empty()) {
            return Poll::Ready(Some(Ok(http_body::Frame::data(first))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.as_ref().is_none_or(|b| b.is_empty()) && self.rest.is_end_stream()
    }
}

/// A response body that keeps `guard` alive until the body ends or is dropped (a limiter slot, a lease).
pub struct HoldUntilEnd<G> {
    pub inner: Body,
    pub guard: Option<G>,
}

impl<G: Send + Unpin + 'static> http_body::Body for HoldUntilEnd<G> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}
