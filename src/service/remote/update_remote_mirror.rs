//! UpdateRemoteMirror: pushes this repository's branches and tags to a configured remote so it mirrors
//! them, as upstream's Go implementation: branches filtered by `only_branches_matching` (`*` wildcards;
//! tags always), refs gone here deleted there, and with `keep_divergent_refs` a mirror ref that is not an
//! ancestor of ours left alone and reported instead of overwritten. Pushes go in batches under the
//! untrusted-URL policy; errors never show the remote's credentials.

use std::collections::BTreeMap;

use tonic::{Status, Streaming};

use crate::git::repo::Repo;
use crate::git::{remote_url, GitCommand, Sub};
use crate::proto::gitaly::*;
use crate::service::{first_request, Context};

/// Refspecs per `git push`, as upstream.
const PUSH_BATCH: usize = 10;

pub async fn update_remote_mirror(
    ctx: &Context,
    mut stream: Streaming<UpdateRemoteMirrorRequest>,
) -> Result<UpdateRemoteMirrorResponse, Status> {
    let first = first_request(&mut stream).await?;
    if first.repository.is_none() {
        return Err(Status::invalid_argument("empty Repository"));
    }
    if first.ref_name.is_empty() {
        return Err(Status::invalid_argument("empty RefName"));
    }
    if !super::remotes::valid_remote_name(&first.ref_name) {
        return Err(Status::invalid_argument(format!("invalid remote name {:?}", first.ref_name)));
    }
    let mut patterns = first.only_branches_matching.clone();
    while let Some(req) = stream.message().await? {
        patterns.extend(req.only_branches_matching);
        if patterns.len() > 100_000 {
            return Err(Status::invalid_argument("too many branch patterns"));
        }
    }
    let matcher = matcher(&patterns).map_err(|e| Status::invalid_argument(format!("branch pattern: {e}")))?;
    let path = ctx.locator.repo_path(first.repository.as_ref())?;
    let ssh = remote_url::SshCommand::new(&ctx.config.internal_dir(), &first.ssh_key, &first.known_hosts)
        .map_err(|e| Status::internal(format!("build ssh invocation: {e}")))?;

    let remote_out = with_ssh(ctx.git.command(&path, Sub::LsRemote).untrusted_remote(), &ssh)
        .user_arg(&first.ref_name)
        .user_arg("refs/heads/*")
        .user_arg("refs/tags/*")
        .run_to_end()
        .await?;
    if !remote_out.exit.success() {
        return Err(Status::internal(format!(
            "get remote references: {}",
            remote_url::redact(remote_out.stderr_text().trim())
        )));
    }
    let mut remote: BTreeMap<Vec<u8>, String> = refs(&remote_out.stdout);
    let local_out = ctx
        .git
        .command(&path, Sub::ForEachRef)
        .flag("--format=%(objectname) %(refname)")
        .trusted_arg("refs/heads/")
        .trusted_arg("refs/tags/")
        .output()
        .await?;
    let local = refs(&local_out.stdout);
    if local.is_empty() {
        return Err(Status::internal("get local references: the repository has no branches or tags"));
    }

    let repo = Repo::new(&ctx.git, &path);
    let mut divergent = Vec::new();
    let mut update = Vec::new();
    for (name, target) in &local {
        match remote.remove(name) {
            None => update.push(name.clone()),
            Some(theirs) if &theirs == target => {}
            Some(theirs) => {
                if first.keep_divergent_refs {
                    // The mirror's value comes from the network: only an object id reaches git's arguments.
                    let ancestor =
                        crate::git::repo::is_oid(&theirs) && repo.is_ancestor(&theirs, target).await? == Some(true);
                    if !ancestor {
                        if matcher.is_match(name) {
                            divergent.push(name.clone());
                        }
                        continue;
                    }
                }
                update.push(name.clone());
            }
        }
    }
    let delete: Vec<Vec<u8>> = if first.keep_divergent_refs { Vec::new() } else { remote.into_keys().collect() };
    let mut refspecs: Vec<String> = Vec::new();
    for (prefix, names) in [("", &update), (":", &delete)] {
        for name in names.iter().filter(|n| matcher.is_match(n)) {
            let name = String::from_utf8(name.clone()).map_err(|_| Status::internal("ref name is not UTF-8"))?;
            refspecs.push(format!("{prefix}{name}"));
        }
    }
    for batch in refspecs.chunks(PUSH_BATCH) {
        let mut cmd = with_ssh(ctx.git.command(&path, Sub::Push).untrusted_remote(), &ssh)
            .flag("--force")
            .flag("--porcelain")
            .user_arg(&first.ref_name);
        for spec in batch {
            // ":refs/…" deletes; user_arg refuses only a leading '-', which no ref has.
            cmd = cmd.user_arg(spec);
        }
        let out = cmd.run_to_end().await?;
        if !out.exit.success() {
            return Err(Status::internal(format!("push to mirror: {}", remote_url::redact(out.stderr_text().trim()))));
        }
    }
    Ok(UpdateRemoteMirrorResponse { divergent_refs: divergent })
}

fn with_ssh<'a>(cmd: GitCommand<'a>, ssh: &Option<remote_url::SshCommand>) -> GitCommand<'a> {
    match ssh {
        Some(s) => cmd.env("GIT_SSH_COMMAND", &s.command),
        None => cmd,
    }
}

/// "oid name" (for-each-ref) or "oid\tname" (ls-remote) lines; peeled tag lines (`^{}`) skipped.
fn refs(out: &[u8]) -> BTreeMap<Vec<u8>, String> {
    out.split(|b| *b == b'\n')
        .filter_map(|line| {
            let at = line.iter().position(|b| *b == b' ' || *b == b'\t')?;
            let (oid, name) = (&line[..at], &line[at + 1..]);
            (!name.ends_with(b"^{}")).then(|| (name.to_vec(), String::from_utf8_lossy(oid).into_owned()))
        })
        .collect()
}

/// Which refs the mirror follows: every tag, and the branches the patterns name (all when none).
fn matcher(patterns: &[Vec<u8>]) -> Result<regex::bytes::Regex, regex::Error> {
    let branches: Vec<String> = patterns
        .iter()
        .map(|p| String::from_utf8_lossy(p).split('*').map(regex::escape).collect::<Vec<_>>().join(".*"))
        .collect();
    let branches = if branches.is_empty() { ".+".to_string() } else { branches.join("|") };
    regex::bytes::Regex::new(&format!("^refs/tags/.+$|^refs/heads/({branches})$"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_branches_and_every_tag() {
        let m = matcher(&[b"release-*".to_vec(), b"main".to_vec()]).unwrap();
        assert!(m.is_match(b"refs/heads/release-1.0"));
        assert!(m.is_match(b"refs/heads/main"));
        assert!(!m.is_match(b"refs/heads/mainline"));
        assert!(!m.is_match(b"refs/heads/feature"));
        assert!(m.is_match(b"refs/tags/v1"));
        assert!(matcher(&[]).unwrap().is_match(b"refs/heads/anything"));
        assert!(matcher(&[b"a.(b".to_vec()]).unwrap().is_match(b"refs/heads/a.(b"));
    }
}
