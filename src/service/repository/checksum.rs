//! CalculateChecksum: XOR of SHA-1 over the `<oid> <ref>` lines of HEAD and GitLab's ref namespaces, so two
//! replicas can be compared cheaply. Same algorithm and encoding as upstream (big-endian, no leading zeros).

use sha1::{Digest, Sha1};
use tonic::Status;

use crate::git::Sub;
use crate::proto::gitaly::{CalculateChecksumRequest, CalculateChecksumResponse};
use crate::service::Context;

const ZERO_OID: &str = "0000000000000000000000000000000000000000";
const NAMESPACES: &[&str] = &["heads", "tags", "keep-around", "merge-requests", "environments", "notes"];

pub async fn calculate_checksum(
    ctx: &Context,
    req: CalculateChecksumRequest,
) -> Result<CalculateChecksumResponse, Status> {
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let out = ctx.git.command(&repo, Sub::ShowRef).flag("--head").run_to_end().await?;
    let mut sum = [0u8; 20];
    let mut any = false;
    if out.exit.success() {
        for line in out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if !counts(line) {
                continue;
            }
            any = true;
            for (s, b) in sum.iter_mut().zip(Sha1::digest(line).iter()) {
                *s ^= b;
            }
        }
    }
    if !any {
        // An empty repository (or one show-ref cannot read) has the zero checksum if it is a bare repo.
        let bare = ctx.git.command(&repo, Sub::RevParse).flag("--is-bare-repository").run_to_end().await?;
        if bare.stdout_text() == "true" {
            return Ok(CalculateChecksumResponse { checksum: ZERO_OID.to_string() });
        }
        return Err(Status::data_loss(format!("CalculateChecksum: not a git repository '{}'", repo.display())));
    }
    let first = sum.iter().position(|b| *b != 0).unwrap_or(sum.len());
    Ok(CalculateChecksumResponse { checksum: hex::encode(&sum[first..]) })
}

/// Upstream's unanchored `HEAD|(refs/(heads|tags|keep-around|merge-requests|environments|notes)/)`.
fn counts(line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line);
    text.contains("HEAD") || NAMESPACES.iter().any(|ns| text.contains(&format!("refs/{ns}/")))
}
