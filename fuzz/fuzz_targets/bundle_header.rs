//! Fuzzes the bundle header reader (`rgitaly::git::bundle::parse`), which decides whether a client's bytes
//! reach `git bundle unbundle` at all.
//!
//! Input: the bytes themselves, also tried behind each real signature (so the fuzzer need not find one).
//! Checked, besides "no panic":
//! - an `Ok` header is what git's `read_bundle_header` would read the same way: written back with
//!   `to_bytes` it is byte for byte the input's header; its length is within the input and a pack starts
//!   right after; ref names are non-empty, with no whitespace or NUL; object ids are lower-case hex of the
//!   format's length;
//! - `Incomplete` only for a prefix that could still become a header: every longer input that extends it
//!   by a blank line and `PACK` is either `Ok` or refused for a reason other than the signature;
//! - the answer depends only on the header's bytes and the pack signature, not on what follows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rgitaly::git::bundle::{parse, HeaderError, SIGNATURE_LEN};

fn check(data: &[u8]) {
    match parse(data) {
        Ok(h) => {
            assert!(h.len + 4 <= data.len() && &data[h.len..h.len + 4] == b"PACK", "no pack at {}", h.len);
            assert_eq!(h.to_bytes(), &data[..h.len], "header does not round-trip");
            let hex = if h.object_format == "sha256" { 64 } else { 40 };
            let lines = h.refs.iter().map(|(o, n)| (o, Some(n))).chain(h.prerequisites.iter().map(|(o, c)| (o, c.as_ref())));
            for (oid, text) in lines {
                assert!(oid.len() == hex && oid.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
                assert!(!text.is_some_and(|t| t.contains(&0)), "NUL in {text:?}");
            }
            for (_, name) in &h.refs {
                assert!(!name.is_empty() && !name.iter().any(|b| b.is_ascii_whitespace()), "ref name {name:?}");
            }
            // What follows the pack signature does not matter.
            let mut longer = data[..h.len + 4].to_vec();
            longer.extend_from_slice(b"anything");
            assert_eq!(parse(&longer).as_ref(), Ok(&h));
        }
        Err(HeaderError::Incomplete) if data.len() < SIGNATURE_LEN => {
            // A prefix of a signature: completing the signature keeps it a candidate.
            let sig = [&b"# v2 git bundle\n"[..], b"# v3 git bundle\n"].into_iter().find(|s| s.starts_with(data));
            let mut done = sig.expect("a prefix of a signature").to_vec();
            done.extend_from_slice(b"\nPACK");
            assert!(parse(&done).is_ok(), "an empty bundle header is refused: {:?}", parse(&done));
        }
        Err(HeaderError::Incomplete) => {
            // Completing it as a header ends decides it one way or the other.
            let mut done = data.to_vec();
            done.extend_from_slice(b"\n\nPACK");
            assert_ne!(parse(&done), Err(HeaderError::Incomplete), "still incomplete: {done:?}");
            assert_ne!(parse(&done), Err(HeaderError::NotABundle), "signature lost: {done:?}");
        }
        Err(HeaderError::NotABundle) => {
            let n = data.len().min(SIGNATURE_LEN);
            assert!(&data[..n] != &b"# v2 git bundle\n"[..n] && &data[..n] != &b"# v3 git bundle\n"[..n]);
        }
        Err(HeaderError::Malformed(_)) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    for sig in [&b"# v2 git bundle\n"[..], b"# v3 git bundle\n"] {
        let mut with = sig.to_vec();
        with.extend_from_slice(data);
        check(&with);
    }
});
