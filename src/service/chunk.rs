//! Upstream's response chunker: items are gathered into one response until the next would bring it to
//! 1 MiB, so a long list goes out in few messages that stay under gRPC's size limit.

/// The size at which a response is sent (upstream's `chunk.maxMessageSize`).
pub const MAX_MESSAGE_SIZE: usize = 1024 * 1024;

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
