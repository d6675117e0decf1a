//! What several RefService RPCs share: `for-each-ref` listings (git's sorting, globbing and
//! `--contains`/`--merged` are the contract) and upstream's batching of 20 refs per message.

use std::path::Path;

use tonic::Status;

use crate::git::Sub;
use crate::service::Ctx;

/// Refs per message for branch listings (upstream's `lines.ItemsPerMessage`).
pub const REFS_PER_MESSAGE: usize = 20;

/// The output lines of `git for-each-ref <flags> <patterns>`; a failing git is an error.
pub async fn for_each_ref(
    ctx: &Ctx,
    repo: &Path,
    flags: &[String],
    patterns: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>, Status> {
    let mut cmd = ctx.git.command(repo, Sub::ForEachRef);
    for f in flags {
        cmd = cmd.flag(f);
    }
    for p in patterns {
        if p.contains(&0) || p.starts_with(b"-") {
            return Err(Status::invalid_argument(format!("invalid ref pattern {:?}", String::from_utf8_lossy(p))));
        }
        cmd = cmd.trusted_arg(std::ffi::OsStr::new(&*String::from_utf8_lossy(p)));
    }
    let out = cmd.run_to_end().await?;
    if !out.exit.success() {
        return Err(Status::internal(format!("exit status {}", out.exit.code)));
    }
    Ok(out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect())
}

/// `name\0oid` lines into pairs.
pub fn name_and_oid(line: &[u8]) -> Option<(Vec<u8>, String)> {
    let nul = line.iter().position(|b| *b == 0)?;
    Some((line[..nul].to_vec(), String::from_utf8_lossy(&line[nul + 1..]).into_owned()))
}
