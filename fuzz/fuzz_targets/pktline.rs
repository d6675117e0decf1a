//! Fuzzes the incremental pkt-line scanner (`rgitaly::pktline::Scanner`).
//!
//! Input: the first byte seeds how the rest is cut into chunks; the rest is the stream. Checked:
//! - no panic, whatever the bytes and the chunking;
//! - the result does not depend on the chunking: one piece, one byte at a time, a single split at a
//!   position picked by the first byte, and pseudo-random chunks (empty ones included) all agree;
//! - it matches a whole-buffer reference parser written from git's framing rules (4 hex digits, `0000`
//!   flush, `0001`/`0002` delim/response-end, otherwise 4..=65520 bytes including the header);
//! - what was seen never goes away as more bytes arrive, and nothing changes after `malformed`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rgitaly::pktline::{Scanner, Seen, MAX_PKT_LEN};

/// Git's reading of a pkt-line length: exactly four hex digits, either case (git's `hexval`).
fn header_len(h: &[u8]) -> Option<usize> {
    h.iter().try_fold(0usize, |acc, &b| Some(acc * 16 + (b as char).to_digit(16)? as usize))
}

/// A non-incremental parser of the whole buffer.
fn reference(data: &[u8]) -> Seen {
    let mut seen = Seen::default();
    let mut pos = 0;
    while data.len() - pos >= 4 {
        let Some(len) = header_len(&data[pos..pos + 4]) else {
            seen.malformed = true;
            break;
        };
        pos += 4;
        match len {
            0 => seen.flush = true,
            1 | 2 => {}
            l if (4..=MAX_PKT_LEN).contains(&l) => {
                let payload_len = l - 4;
                if data.len() - pos < payload_len {
                    // Incomplete packet: not seen yet.
                    break;
                }
                let payload = &data[pos..pos + payload_len];
                seen.done |= payload.starts_with(b"done");
                seen.deepen |= payload.starts_with(b"deepen");
                pos += payload_len;
            }
            _ => {
                seen.malformed = true;
                break;
            }
        }
    }
    seen
}

/// Every flag set in `before` is still set in `after`.
fn grows(before: &Seen, after: &Seen) -> bool {
    (!before.done || after.done)
        && (!before.flush || after.flush)
        && (!before.deepen || after.deepen)
        && (!before.malformed || after.malformed)
}

/// Feeds `chunks` one by one, checking monotonicity and that `malformed` freezes the result.
fn feed_chunks<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> Seen {
    let mut s = Scanner::default();
    for chunk in chunks {
        let before = s.seen.clone();
        s.feed(chunk);
        assert!(grows(&before, &s.seen), "flags went away: {before:?} -> {:?}", s.seen);
        if before.malformed {
            assert_eq!(before, s.seen, "result changed after malformed");
        }
    }
    s.seen
}

/// Cuts `data` into pseudo-random chunks (xorshift seeded by `seed`), empty ones included.
fn random_chunks(data: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    let max = 1 + (seed as usize % 9) * 8; // chunk sizes up to 1..=65
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state as usize % (max + 1)).min(rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else { return };

    let whole = feed_chunks(std::iter::once(data));
    assert_eq!(whole, reference(data), "scanner disagrees with the reference parser");

    let bytewise = feed_chunks(data.chunks(1));
    assert_eq!(bytewise, whole, "byte-at-a-time differs from one piece");

    let split = if data.is_empty() { 0 } else { seed as usize % (data.len() + 1) };
    let (a, b) = data.split_at(split);
    assert_eq!(feed_chunks([a, b].into_iter()), whole, "split at {split} differs from one piece");

    let chunks = random_chunks(data, seed);
    assert_eq!(feed_chunks(chunks.into_iter()), whole, "random chunking differs from one piece");
});
