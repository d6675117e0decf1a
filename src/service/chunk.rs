//! Upstream's response chunker: items are gathered into one response until the next would bring it to
//! 1 MiB, so a long list goes out in few messages that stay under gRPC's size limit.

/// The size at which a response is sent (upstream's `chunk.maxMessageSize`).
const MAX_MESSAGE_SIZE: usize = 1024 * 1024;

#[derive(Debug)]
pub struct Chunker<T> {
    items: Vec<T>,
    size: usize,
}

impl<T> Default for Chunker<T> {
    fn default() -> Self {
        Chunker { items: Vec::new(), size: 0 }
    }
}

impl<T: prost::Message> Chunker<T> {
    /// Adds `item`; returns the items gathered so far when `item` starts a new response.
    pub fn push(&mut self, item: T) -> Option<Vec<T>> {
        let size = item.encoded_len();
        let full = (!self.items.is_empty() && self.size + size >= MAX_MESSAGE_SIZE).then(|| self.take());
        self.size += size;
        self.items.push(item);
        full
    }

    /// Whatever is left, if anything.
    pub fn finish(mut self) -> Option<Vec<T>> {
        (!self.items.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Vec<T> {
        self.size = 0;
        std::mem::take(&mut self.items)
    }
}

/// Byte strings (names, paths) in batches of up to 1 MiB, each counted as a `bytes` field with `tag`.
pub fn byte_batches(items: Vec<Vec<u8>>, tag: u32) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let (mut batch, mut size) = (Vec::new(), 0usize);
    for item in items {
        let len = prost::encoding::bytes::encoded_len(tag, &item);
        if !batch.is_empty() && size + len >= MAX_MESSAGE_SIZE {
            out.push(std::mem::take(&mut batch));
            size = 0;
        }
        size += len;
        batch.push(item);
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

/// Upstream's streamio write size for blob and message data.
pub const DATA_CHUNK: usize = 128 * 1024;

/// Sends `data` in 128 KiB pieces, each its own message.
pub async fn send_pieces<T: Send>(data: &[u8], make: impl Fn(Vec<u8>) -> T, out: &crate::odb::Out<T>) {
    for piece in data.chunks(DATA_CHUNK) {
        out.send(make(piece.to_vec())).await;
    }
}
