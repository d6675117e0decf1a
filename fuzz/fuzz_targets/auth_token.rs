//! Fuzzes the server's v2 token check (`rgitaly::layers::auth::check_token`).
//!
//! Input (missing bytes read as zero): 8 bytes of `now`, a skew byte, a flags byte, a length-prefixed
//! current secret, a length-prefixed previous secret, a 2-byte position and a byte value for a mutation,
//! and the rest as an arbitrary header (lossy UTF-8, optionally behind `Bearer v2.<valid sig>.`).
//! Checked, besides "no panic":
//! - a header made by `rgitaly::auth::sign_v2` with the current secret at `now + skew` is accepted as
//!   `Current` exactly when |skew| <= 30, and is `Denied` otherwise; one signed with the previous secret
//!   is accepted as `Previous` (or `Current` where both secrets sign alike, as HMAC keys that differ only
//!   by trailing NULs do);
//! - a header signed with any other secret is `Denied`;
//! - changing one byte of a valid header makes it fail, except changing the case of a letter of the scheme
//!   (matched without regard to case, as grpc-go's `AuthFromMD` does) or of a signature hex digit;
//! - an arbitrary header is accepted only if it is genuine: `<bearer, any case> v2.<sig>.<ts>` with `ts` in
//!   canonical decimal within ±30 s of `now` and `sig` (hex, either case) what `sign_v2` gives for one of
//!   the secrets and `ts`. That is, random headers are never accepted;
//! - no header, or one whose scheme (up to the first space) is not `bearer` in any case, is
//!   `Unauthenticated`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rgitaly::auth::sign_v2;
use rgitaly::layers::auth::{check_token, Accepted, AuthError, MAX_SKEW};

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    fn byte(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }
    fn string(&mut self) -> String {
        let n = self.byte() as usize % 80; // past 64 bytes HMAC hashes the key
        String::from_utf8_lossy(self.bytes(n)).into_owned()
    }
}

fn bearer(secret: &str, ts: u64) -> String {
    format!("Bearer {}", sign_v2(secret.as_bytes(), ts))
}

/// Whether the header's scheme (up to the first space) is `bearer`, in any case.
fn bearer_scheme(header: &str) -> bool {
    header.split_once(' ').is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
}

/// Which secret, if any, makes `header` a genuine token at `now` (see the module comment).
fn genuine(header: &str, current: &str, previous: &str, now: u64) -> Option<Accepted> {
    if !bearer_scheme(header) {
        return None;
    }
    let parts: Vec<&str> = header.split_once(' ')?.1.split('.').collect();
    let [version, sig, ts] = parts.as_slice() else { return None };
    let issued: u64 = ts.parse().ok()?;
    if *version != "v2" || issued.abs_diff(now) > MAX_SKEW {
        return None;
    }
    let signs = |secret: &str| {
        let expected = sign_v2(secret.as_bytes(), issued);
        let e: Vec<&str> = expected.split('.').collect();
        e[1].eq_ignore_ascii_case(sig) && e[2] == *ts
    };
    if signs(current) {
        Some(Accepted::Current)
    } else if !previous.is_empty() && signs(previous) {
        Some(Accepted::Previous)
    } else {
        None
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut now_bytes = [0u8; 8];
    let raw = input.bytes(8);
    now_bytes[..raw.len()].copy_from_slice(raw);
    let now = u64::from_le_bytes(now_bytes);
    let skew = i64::from(input.byte()) - 128;
    let flags = input.byte();
    let current = input.string();
    let previous = input.string();
    let prev_list = vec![previous.clone()];
    let pos = u16::from_le_bytes([input.byte(), input.byte()]) as usize;
    let value = input.byte();
    let arbitrary = String::from_utf8_lossy(input.0).into_owned();
    let check = |h: &str, prev: &[String]| check_token(Some(h), &current, prev, now);

    // No header at all.
    assert_eq!(check_token(None, &current, &prev_list, now), Err(AuthError::Unauthenticated));

    // Correctly signed headers, on both sides of the window.
    if let Some(ts) = now.checked_add_signed(skew) {
        let within = skew.unsigned_abs() <= MAX_SKEW;
        let ok = bearer(&current, ts);
        let expect = if within { Ok(Accepted::Current) } else { Err(AuthError::Denied) };
        assert_eq!(check(&ok, &[]), expect, "current secret, skew {skew}");
        assert_eq!(check(&ok, &prev_list), expect, "current secret with a previous one, skew {skew}");

        let by_previous = bearer(&previous, ts);
        let alike = by_previous == ok;
        let expect = match (within, alike, previous.is_empty()) {
            (false, _, _) => Err(AuthError::Denied),
            (true, true, _) => Ok(Accepted::Current),
            (true, false, false) => Ok(Accepted::Previous),
            (true, false, true) => Err(AuthError::Denied),
        };
        assert_eq!(check(&by_previous, &prev_list), expect, "previous secret, skew {skew}");
        // Without it in the list, the previous secret is just another secret.
        let expect = if within && alike { Ok(Accepted::Current) } else { Err(AuthError::Denied) };
        assert_eq!(check(&by_previous, &[]), expect, "other secret, skew {skew}");
        // A secret that is certainly different (it differs before any NUL padding).
        assert_eq!(check(&bearer(&format!("{current}x"), ts), &[]), Err(AuthError::Denied));
    }

    // One byte of a valid header changed.
    let ok = bearer(&current, now);
    let mut bytes = ok.clone().into_bytes();
    let at = pos % bytes.len();
    let original = bytes[at];
    bytes[at] = value;
    if let Ok(mutated) = String::from_utf8(bytes) {
        let result = check(&mutated, &prev_list);
        if value == original {
            assert_eq!(result, Ok(Accepted::Current));
        } else if result.is_ok() {
            let scheme = 0.."Bearer".len();
            let sig = "Bearer v2.".len().."Bearer v2.".len() + 64;
            assert!(
                (scheme.contains(&at) || sig.contains(&at)) && value.eq_ignore_ascii_case(&original),
                "mutated header accepted: {mutated:?} (from {ok:?}): {result:?}"
            );
        }
        if !bearer_scheme(&mutated) {
            assert_eq!(result, Err(AuthError::Unauthenticated));
        }
    }

    // Arbitrary headers, bare or behind a valid-looking prefix.
    let header = if flags & 1 != 0 {
        let signed = sign_v2(current.as_bytes(), now);
        let prefix = signed.rsplit_once('.').unwrap().0;
        format!("Bearer {prefix}.{arbitrary}")
    } else {
        arbitrary
    };
    let result = check(&header, &prev_list);
    match genuine(&header, &current, &previous, now) {
        Some(kind) => assert_eq!(result, Ok(kind), "genuine header {header:?} refused"),
        None => assert!(result.is_err(), "non-genuine header {header:?} accepted: {result:?}"),
    }
    if !bearer_scheme(&header) {
        assert_eq!(result, Err(AuthError::Unauthenticated));
    }
});
