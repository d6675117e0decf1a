//! Fuzzes the parser of `git diff --raw --patch` output (`rgitaly::service::diff::parser`), which reads
//! git's output for CommitDiff while it arrives.
//!
//! Input: byte 0 seeds how the output is cut into reads; bytes 1..5 choose the limits (whether enforced or
//! collapsed, and small maxima so they are reached); the rest is the output. Checked, besides "no panic"
//! and "ends" (libFuzzer's timeout):
//! - the diffs and the first error are the same read in one piece, one byte at a time and in
//!   pseudo-random pieces (empty reads never happen: a 0-byte read is the end);
//! - memory is bounded by the input: the patches together hold no more bytes than the output has;
//! - an overflow marker ends the list; with limits enforced no patch reaches `max_patch_bytes`, and a
//!   collapsed or too-large diff has an empty patch; there are never more diffs than raw lines plus type
//!   changes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rgitaly::service::diff::parser::{unescape, Diff, Limits, Parser};

/// Hands out `data` in pieces whose sizes come from a xorshift seeded by `seed` (0 = all at once).
struct Pieces<'a> {
    data: &'a [u8],
    state: u32,
    max: usize,
}

impl std::io::Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = self.data.len().min(buf.len());
        if self.max > 0 {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 17;
            self.state ^= self.state << 5;
            n = n.min(1 + self.state as usize % self.max);
        }
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn run(data: &[u8], limits: Limits, seed: u32, max: usize) -> (Vec<Diff>, Option<String>) {
    let reader = Pieces { data, state: seed | 1, max };
    let mut parser = match Parser::new(reader, limits) {
        Ok(p) => p,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut diffs = Vec::new();
    while let Some(next) = parser.next_diff() {
        match next {
            Ok(d) => diffs.push(d),
            Err(e) => return (diffs, Some(e)),
        }
    }
    (diffs, None)
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 5 {
        return;
    }
    let (head, output) = input.split_at(5);
    let small = |b: u8| i64::from(b % 16) + 1;
    let limits = Limits {
        enforce: head[1] & 1 != 0,
        collapse: head[1] & 2 != 0,
        max_files: small(head[2]),
        max_lines: small(head[3]),
        max_bytes: small(head[4]) * 16,
        max_patch_bytes: small(head[4] >> 4) * 8,
        safe_max_files: small(head[2] >> 4),
        safe_max_lines: small(head[3] >> 4),
        safe_max_bytes: small(head[4]) * 4,
    };
    let whole = run(output, limits, 0, 0);
    assert_eq!(run(output, limits, 0, 1), whole, "byte at a time differs");
    assert_eq!(run(output, limits, u32::from(head[0]).wrapping_mul(2_654_435_761), 1 + head[0] as usize % 70), whole, "pieces differ");

    let (diffs, _) = &whole;
    let patch_bytes: usize = diffs.iter().map(|d| d.patch.len()).sum();
    assert!(patch_bytes <= output.len(), "{patch_bytes} patch bytes from {} of output", output.len());
    if let Some(i) = diffs.iter().position(|d| d.overflow_marker) {
        assert_eq!(i + 1, diffs.len(), "diffs after the overflow marker");
    }
    for d in diffs {
        if limits.enforce && !d.overflow_marker {
            assert!((d.patch.len() as i64) < limits.max_patch_bytes, "patch of {} bytes", d.patch.len());
        }
        if d.collapsed || d.too_large {
            assert!(d.patch.is_empty());
        }
    }
    let raw_lines = output.split(|b| *b == b'\n').take_while(|l| l.first() == Some(&b':')).count();
    assert!(diffs.len() <= 2 * raw_lines + 1, "{} diffs from {raw_lines} raw lines", diffs.len());

    // Unescaping never grows a path.
    assert!(unescape(output).len() <= output.len());
});
