//! Fuzzes the patch series reader (`rgitaly::git::patch::parse`), which decides whether a client's bytes
//! reach `git am` at all.
//!
//! Input: the bytes themselves, also tried behind a real message header and behind a diff header (so the
//! fuzzer need not find either). Checked, besides "no panic" and libFuzzer's time limit (the reader must
//! stay linear: hunks are skipped by their counts, never rescanned):
//! - an `Ok` series starts with a format-patch `From <oid> Mon Sep 17 00:00:00 2001` line and every message
//!   names its commit in lower-case hex of 40 or 64 digits;
//! - every path it reports is one git would apply inside the tree: `clean` accepts it unchanged, so no
//!   `..`, `.git`, absolute path, NUL or line break gets through, however it was quoted;
//! - the answer does not change when the input is cut at a message boundary and the parts read apart.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rgitaly::git::patch::{clean, parse, PatchError};

const HEADER: &[u8] = b"From 4b825dc642cb6eb9a060e54bf8d69288fbee4904 Mon Sep 17 00:00:00 2001\nFrom: A <a@b>\nSubject: s\n\n";

fn check(data: &[u8]) {
    match parse(data) {
        Ok(series) => {
            assert!(data.starts_with(b"From "), "a series that does not start with a From line");
            for p in &series {
                assert!(p.commit.len() == 40 || p.commit.len() == 64);
                assert!(p.commit.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
                for path in &p.paths {
                    assert_eq!(clean(path).as_ref(), Ok(path), "unclean path {path:?}");
                    assert!(!path.contains(&0) && !path.contains(&b'\n'));
                }
            }
        }
        Err(PatchError::NotAPatch) => assert!(!data.starts_with(HEADER)),
        Err(PatchError::Malformed { index, .. }) => assert!(index >= 1),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut with = HEADER.to_vec();
    with.extend_from_slice(data);
    check(&with);
    let mut diff = with[..HEADER.len()].to_vec();
    diff.extend_from_slice(b"diff --git a/x b/x\n");
    diff.extend_from_slice(data);
    check(&diff);
    // Two messages read together as they read apart.
    let mut two = with.clone();
    if !two.ends_with(b"\n") {
        two.push(b'\n');
    }
    let first = parse(&two);
    two.extend_from_slice(HEADER);
    let both = parse(&two);
    if let Ok(first) = first {
        let both = both.expect("a valid message followed by a valid empty one");
        assert_eq!(both.len(), first.len() + 1);
        assert_eq!(both[..first.len()], first[..]);
    }
});
