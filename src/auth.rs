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
        // HMAC-SHA256("secret", "1600000000"), computed independently with openssl.
        let t = sign_v2(b"secret", 1_600_000_000);
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "v2");
        assert_eq!(parts[2], "1600000000");
        assert_eq!(parts[1].len(), 64);
        let expected = std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-hmac", "secret"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(b"1600000000")?;
                c.wait_with_output()
            });
        if let Ok(out) = expected {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.trim().ends_with(parts[1]), "{text} vs {t}");
        }
    }
}
