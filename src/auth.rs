//! Gitaly's v2 authentication token: `v2.<hex HMAC-SHA256(secret, timestamp)>.<timestamp>`, sent as
//! `authorization: Bearer …`. This side signs (for `rgitaly-ssh` and the CLI); the server-side check lives
//! in the auth layer.

use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Signs a v2 token for the given unix time.
pub fn sign_v2(secret: &[u8], unix_time: u64) -> String {
    let ts = unix_time.to_string();
    let mut mac = HmacSha256::new_from_slice(secret).expect("hmac accepts any key length");
    mac.update(ts.as_bytes());
    format!("v2.{}.{ts}", hex::encode(mac.finalize().into_bytes()))
}

/// The `authorization` header value for now.
pub fn bearer_now(secret: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("Bearer {}", sign_v2(secret.as_bytes(), now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_upstream() {
        // HMAC-SHA256(key "secret", message "1600000000"), computed independently.
        assert_eq!(
            sign_v2(b"secret", 1_600_000_000),
            "v2.931e1addb3bdbd13a10c1ca50d3118a30fdeff78b1ec60c8bde7827fcf4f4dc1.1600000000"
        );
    }
}
