//! Git's pkt-line framing: writing the few lines the server adds itself, and scanning a client's stream
//! without buffering it.
//!
//! The scanner watches the bytes we pump into `git upload-pack` so that a negotiation that never finishes
//! can be cut off, and so we know whether a request asked for a shallow fetch; it never holds more than
//! one packet header, whatever the size of the stream.

/// The largest pkt-line git allows (including the 4-byte header).
pub const MAX_PKT_LEN: usize = 65520;

/// Encodes `data` as one pkt-line.
pub fn encode(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:04x}", data.len() + 4).into_bytes();
    out.extend_from_slice(data);
    out
}

/// The flush packet.
pub const FLUSH: &[u8] = b"0000";

/// What the scanner has learnt about a client's request so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seen {
    /// A `done` line (the end of upload-pack negotiation).
    pub done: bool,
    /// A flush packet.
    pub flush: bool,
    /// A `deepen` line (a shallow fetch).
    pub deepen: bool,
    /// The stream was not valid pkt-line framing; scanning stopped.
    pub malformed: bool,
}

/// An incremental pkt-line scanner fed with arbitrary chunks.
#[derive(Debug, Default)]
pub struct Scanner {
    header: Vec<u8>,
    /// Payload bytes still to come for the current packet.
    remaining: usize,
    /// The first bytes of the current payload, enough to recognise `done` and `deepen`.
    prefix: Vec<u8>,
    pub seen: Seen,
}

const PREFIX_LEN: usize = 8;

/// A pkt-line length header: exactly four hex digits, as git reads it (`usize::from_str_radix` would also
/// take a leading `+`).
fn parse_len(header: &[u8]) -> Option<usize> {
    header.iter().try_fold(0, |len, &b| Some(len * 16 + (b as char).to_digit(16)? as usize))
}

impl Scanner {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.seen.malformed {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                let want = PREFIX_LEN.saturating_sub(self.prefix.len()).min(n);
                self.prefix.extend_from_slice(&data[..want]);
                self.remaining -= n;
                data = &data[n..];
                if self.remaining == 0 {
                    self.end_packet();
                }
                continue;
            }
            let need = 4 - self.header.len();
            let n = need.min(data.len());
            self.header.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.header.len() < 4 {
                return;
            }
            let len = parse_len(&self.header);
            self.header.clear();
            match len {
                Some(0) => self.seen.flush = true,
                Some(1) | Some(2) => {}
                Some(l) if (4..=MAX_PKT_LEN).contains(&l) => {
                    self.remaining = l - 4;
                    self.prefix.clear();
                    if self.remaining == 0 {
                        self.end_packet();
                    }
                }
                _ => self.seen.malformed = true,
            }
        }
    }

    fn end_packet(&mut self) {
        if self.prefix.starts_with(b"done") {
            self.seen.done = true;
        }
        if self.prefix.starts_with(b"deepen") {
            self.seen.deepen = true;
        }
        self.prefix.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes() {
        assert_eq!(encode(b"# service=git-upload-pack\n"), b"001e# service=git-upload-pack\n");
    }

    #[test]
    fn finds_done_and_deepen_across_chunk_boundaries() {
        let stream = [encode(b"want 1234\n"), encode(b"deepen 1\n"), FLUSH.to_vec(), encode(b"done\n")].concat();
        for split in 0..stream.len() {
            let mut s = Scanner::default();
            s.feed(&stream[..split]);
            s.feed(&stream[split..]);
            assert_eq!(s.seen, Seen { done: true, flush: true, deepen: true, malformed: false }, "split {split}");
        }
    }

    #[test]
    fn rejects_garbage() {
        let mut s = Scanner::default();
        s.feed(b"zzzzdone");
        assert!(s.seen.malformed && !s.seen.done);
        let mut s = Scanner::default();
        s.feed(b"ffff");
        assert!(s.seen.malformed);
    }

    #[test]
    fn header_is_four_hex_digits() {
        // Found by fuzz/fuzz_targets/pktline.rs: "+00e" was read as length 14, so a payload that git
        // itself would refuse counted as a `deepen` (or `done`) line.
        for stream in [&b"+00edeepen 1\n"[..], b"+009done\n", b" 009done\n", b"-009done\n"] {
            let mut s = Scanner::default();
            s.feed(stream);
            assert_eq!(s.seen, Seen { malformed: true, ..Seen::default() }, "{stream:?}");
        }
        let mut s = Scanner::default();
        s.feed(b"000Adeepen");
        assert!(s.seen.deepen && !s.seen.malformed, "upper-case hex is valid");
    }
}
