//! GetArchive: `git archive` of a commit (optionally one subtree, with exclusions) streamed in chunks.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use tonic::codegen::BoxStream;
use tonic::Status;

use crate::git::{validate_revision, Sub};
use crate::proto::gitaly::{get_archive_request::Format, GetArchiveRequest, GetArchiveResponse};
use crate::service::Context;
use crate::streamio::{self, Output};

pub async fn get_archive(ctx: &Context, req: GetArchiveRequest) -> Result<BoxStream<GetArchiveResponse>, Status> {
    let format = match Format::try_from(req.format) {
        Ok(Format::Zip) => "zip",
        Ok(Format::Tar) => "tar",
        Ok(Format::TarGz) => "tar.gz",
        Ok(Format::TarBz2) => "tar.bz2",
        Err(_) => return Err(Status::invalid_argument("invalid format")),
    };
    let path = clean_path(&req.path)?;
    let excludes = req.exclude.iter().map(|e| clean_path(e)).collect::<Result<Vec<_>, _>>()?;
    validate_revision(req.commit_id.as_bytes())
        .map_err(|e| Status::invalid_argument(format!("invalid commitId: {e}")))?;
    // With an elided path the archive is of `<commit>:<path>`, so excludes must lie below the path and
    // are given relative to it.
    let elide = req.elide_path && path != b".";
    let mut relative_excludes = Vec::with_capacity(excludes.len());
    for e in &excludes {
        if !elide {
            relative_excludes.push(e.clone());
            continue;
        }
        let mut prefix = path.clone();
        prefix.push(b'/');
        match e.strip_prefix(prefix.as_slice()) {
            Some(rest) if !rest.is_empty() => relative_excludes.push(rest.to_vec()),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "invalid exclude: {:?} is not a subdirectory of {:?}",
                    String::from_utf8_lossy(e),
                    String::from_utf8_lossy(&path)
                )))
            }
        }
    }
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;

    let exists = |p: &[u8]| {
        let spec = format!("{}:{}", req.commit_id, String::from_utf8_lossy(p));
        ctx.git.command(&repo, Sub::CatFile).flag("-e").user_arg(spec).run_to_end()
    };
    if path != b"." && !exists(&path).await?.exit.success() {
        return Err(Status::failed_precondition("path doesn't exist"));
    }
    for (i, e) in excludes.iter().enumerate() {
        if !exists(e).await?.exit.success() {
            return Err(Status::failed_precondition(format!("exclude[{i}] doesn't exist")));
        }
    }

    let mut cmd = ctx
        .git
        .command(&repo, Sub::Archive)
        .config("tar.tar.bz2.command", "bzip2 -c")
        .flag(format!("--format={format}"))
        .user_option("--prefix", &format!("{}/", req.prefix));
    if elide {
        cmd = cmd.user_arg(format!("{}:{}", req.commit_id, String::from_utf8_lossy(&path)));
    } else {
        cmd = cmd.user_arg(&req.commit_id).path_arg(OsStr::from_bytes(&path));
    }
    for e in &relative_excludes {
        let mut spec = b":(exclude)".to_vec();
        spec.extend_from_slice(e);
        cmd = cmd.path_arg(OsStr::from_bytes(&spec));
    }
    let child = cmd.spawn_no_stdin()?;
    let (tx, out) = streamio::response_channel();
    tokio::spawn(async move {
        let data = |o: Output| match o {
            Output::Stdout(data) | Output::Stderr(data) => GetArchiveResponse { data },
        };
        let err = match streamio::run_output(child, &tx, data).await {
            Ok(done) if done.exit.success() => return,
            Ok(done) => Status::internal(format!("GetArchive: {}", String::from_utf8_lossy(&done.stderr).trim())),
            Err(e) => e,
        };
        let _ = tx.send(Err(err)).await;
    });
    Ok(out)
}

/// Upstream's relative-path check for archive paths: no escaping the tree; empty means the root.
fn clean_path(p: &[u8]) -> Result<Vec<u8>, Status> {
    if p.is_empty() {
        return Ok(b".".to_vec());
    }
    if p.contains(&0) {
        return Err(Status::invalid_argument("relative path escapes root directory"));
    }
    let mut depth = 0i32;
    let mut out = std::path::PathBuf::new();
    for c in Path::new(OsStr::from_bytes(p)).components() {
        match c {
            Component::Normal(n) => {
                depth += 1;
                out.push(n);
            }
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(Status::invalid_argument("relative path escapes root directory"));
                }
                out.pop();
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(Status::invalid_argument("relative path escapes root directory"))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Ok(b".".to_vec());
    }
    Ok(out.as_os_str().as_bytes().to_vec())
}
