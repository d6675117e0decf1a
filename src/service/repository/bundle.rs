//! CreateBundle (streamed out) and CreateRepositoryFromBundle (streamed in).
//!
//! The incoming bundle is written to a file inside the storage as it arrives, never held in memory; the
//! repository is built in a scratch directory and renamed into place, so a failed import leaves nothing
//! at the target path.

use tokio::io::AsyncWriteExt;
use tonic::codegen::BoxStream;
use tonic::{Status, Streaming};

use crate::git::{bundle, Sub};
use crate::proto::gitaly::{
    CreateBundleRequest, CreateBundleResponse, CreateRepositoryFromBundleRequest, CreateRepositoryFromBundleResponse,
};
use crate::service::Context;
use crate::streamio::{self, Output};

pub fn create_bundle(ctx: &Context, req: CreateBundleRequest) -> Result<BoxStream<CreateBundleResponse>, Status> {
    if req.repository.is_none() {
        return Err(Status::invalid_argument("CreateBundle: empty Repository"));
    }
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let child = ctx
        .git
        .command(&repo, Sub::Bundle)
        .flag("create")
        .flag("-")
        .flag("--all")
        .spawn_no_stdin()
        .map_err(|e| Status::internal(format!("CreateBundle: cmd start failed: {e}")))?;
    let (tx, out) = streamio::response_channel();
    tokio::spawn(async move {
        let data = |o: Output| match o {
            Output::Stdout(data) | Output::Stderr(data) => CreateBundleResponse { data },
        };
        let err = match streamio::run_output(child, &tx, data).await {
            Ok(done) if done.exit.success() => return,
            Ok(done) => Status::internal(format!(
                "CreateBundle: cmd wait failed: {}",
                String::from_utf8_lossy(&done.stderr).trim()
            )),
            Err(e) => e,
        };
        let _ = tx.send(Err(err)).await;
    });
    Ok(out)
}

pub async fn create_repository_from_bundle(
    ctx: &Context,
    mut stream: Streaming<CreateRepositoryFromBundleRequest>,
) -> Result<CreateRepositoryFromBundleResponse, Status> {
    let first = stream
        .message()
        .await
        .map_err(|e| Status::internal(format!("CreateRepositoryFromBundle: first request failed: {e}")))?
        .ok_or_else(|| Status::invalid_argument("CreateRepositoryFromBundle: empty request stream"))?;
    let Some(repository) = first.repository.as_ref() else {
        return Err(Status::invalid_argument("CreateRepositoryFromBundle: empty Repository"));
    };
    let target = ctx.locator.target_path(Some(repository))?;
    if std::fs::read_dir(&target).map(|mut d| d.next().is_some()).unwrap_or(target.exists()) {
        return Err(Status::failed_precondition("CreateRepositoryFromBundle: target directory is non-empty"));
    }
    let scratch = tempfile::Builder::new()
        .prefix("bundle-")
        .tempdir_in(ctx.locator.temp_dir(&repository.storage_name)?)
        .map_err(|e| Status::internal(format!("CreateRepositoryFromBundle: tmp dir failed: {e}")))?;

    // Stream the bundle to disk, keeping its header to check what it is (and to know its refs).
    let bundle_path = scratch.path().join("repo.bundle");
    let mut file = tokio::fs::File::create(&bundle_path)
        .await
        .map_err(|e| Status::internal(format!("CreateRepositoryFromBundle: new bundle file failed: {e}")))?;
    let write_err = |e: std::io::Error| Status::internal(format!("CreateRepositoryFromBundle: write bundle: {e}"));
    let refused = |e: bundle::HeaderError| Status::invalid_argument(format!("CreateRepositoryFromBundle: {e}"));
    let mut reader = HeaderReader::default();
    reader.feed(&first.data).map_err(refused)?;
    file.write_all(&first.data).await.map_err(write_err)?;
    while let Some(msg) = stream.message().await? {
        reader.feed(&msg.data).map_err(refused)?;
        file.write_all(&msg.data).await.map_err(write_err)?;
    }
    file.flush().await.map_err(write_err)?;
    drop(file);
    // Only a bundle reaches git: a `gitdir:` file or a repository path would make a clone read another
    // repository of the host.
    let header = reader.finish().map_err(refused)?;
    if header.object_format != "sha1" {
        return Err(Status::invalid_argument(format!(
            "CreateRepositoryFromBundle: object format {} is not supported",
            header.object_format
        )));
    }

    let staged = scratch.path().join("repo.git");
    let redact = |s: String| {
        s.replace(&*staged.to_string_lossy(), "[REPO PATH]").replace(&*bundle_path.to_string_lossy(), "[BUNDLE]")
    };
    let failed = |what: &str, e: crate::git::GitError| {
        Status::internal(redact(format!("CreateRepositoryFromBundle: {what}: {e}")))
    };
    ctx.git
        .bare(Sub::Init)
        .flag("--bare")
        .flag("--quiet")
        .path_arg(&staged)
        .output()
        .await
        .map_err(|e| failed("init", e))?;
    // `bundle unbundle` reads only the pack inside the file (no transport, so nothing else can be named)
    // and lists the bundle's refs; objects are checked before any ref points at them.
    ctx.git
        .command(&staged, Sub::Bundle)
        .flag("unbundle")
        .path_arg(&bundle_path)
        .output()
        .await
        .map_err(|e| failed("cmd wait failed", e))?;
    ctx.git
        .command(&staged, Sub::Fsck)
        .config("fsck.badTimezone", "ignore")
        .flag("--no-dangling")
        .flag("--no-progress")
        .output()
        .await
        .map_err(|e| failed("fsck", e))?;
    let heads = header.refs;
    let mut updates = Vec::new();
    for (oid, name) in heads.iter().filter(|(_, name)| name.starts_with(b"refs/")) {
        updates.extend_from_slice(b"create ");
        updates.extend_from_slice(name);
        updates.push(0);
        updates.extend_from_slice(oid.as_bytes());
        updates.push(0);
    }
    if !updates.is_empty() {
        ctx.git
            .command(&staged, Sub::UpdateRef)
            .flag("-z")
            .flag("--stdin")
            .output_with_stdin(updates)
            .await
            .map_err(|e| failed("update refs", e))?;
    }
    // HEAD as clone sets it: the branch the bundle's HEAD points at, the default branch names first.
    if let Some(branch) = head_branch(&heads) {
        ctx.git
            .command(&staged, Sub::SymbolicRef)
            .trusted_arg("HEAD")
            .trusted_arg(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&branch))
            .output()
            .await
            .map_err(|e| failed("set HEAD", e))?;
    }

    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Status::internal(format!("create directories: {e}")))?;
    }
    // An empty directory at the target (allowed above) is replaced; a non-empty one makes rename fail.
    let _ = std::fs::remove_dir(&target);
    std::fs::rename(&staged, &target)
        .map_err(|e| Status::internal(format!("CreateRepositoryFromBundle: move into place: {e}")))?;
    Ok(CreateRepositoryFromBundleResponse {})
}

/// A bundle header is at most this long: 64 MiB is over 800,000 refs.
const MAX_HEADER: usize = 64 << 20;

/// Collects a bundle's first bytes as they arrive until its header can be read, and only that far.
#[derive(Default)]
struct HeaderReader {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for the blank line that ends the header.
    scanned: usize,
    blank: bool,
    header: Option<bundle::Header>,
}

impl HeaderReader {
    fn feed(&mut self, data: &[u8]) -> Result<(), bundle::HeaderError> {
        if self.header.is_some() {
            return Ok(());
        }
        let room = (MAX_HEADER + 4).saturating_sub(self.buf.len());
        let take = &data[..data.len().min(room)];
        // Doubling, but never past the limit: a header near it costs its size, not twice that.
        if self.buf.capacity() - self.buf.len() < take.len() {
            let want = (self.buf.capacity() * 2).max(self.buf.len() + take.len()).min(MAX_HEADER + 4);
            self.buf.reserve_exact(want - self.buf.len());
        }
        self.buf.extend_from_slice(take);
        // Parsed when that can decide: the signature as soon as it is in (garbage is refused at its first
        // bytes), the whole header once its end is; not again for every piece of a long header.
        let from = self.scanned.saturating_sub(1);
        self.blank |= self.buf[from..].windows(2).any(|w| w == b"\n\n");
        self.scanned = self.buf.len();
        let probe = if self.blank { &self.buf[..] } else { &self.buf[..self.buf.len().min(bundle::SIGNATURE_LEN)] };
        match bundle::parse(probe) {
            Ok(h) => {
                self.header = Some(h);
                self.buf = Vec::new();
                Ok(())
            }
            Err(bundle::HeaderError::Incomplete) if self.buf.len() > MAX_HEADER => {
                Err(bundle::HeaderError::Malformed("header too large".into()))
            }
            Err(bundle::HeaderError::Incomplete) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The header, once the whole stream was fed.
    fn finish(self) -> Result<bundle::Header, bundle::HeaderError> {
        if let Some(h) = self.header {
            return Ok(h);
        }
        match bundle::parse(&self.buf) {
            Err(bundle::HeaderError::Incomplete) if self.buf.len() < bundle::SIGNATURE_LEN => {
                Err(bundle::HeaderError::NotABundle)
            }
            Err(bundle::HeaderError::Incomplete) => Err(bundle::HeaderError::Malformed("truncated".into())),
            other => other,
        }
    }
}

/// The branch HEAD names in a bundle's heads: the one at HEAD's commit, `main` or `master` preferred.
fn head_branch(heads: &[(String, Vec<u8>)]) -> Option<Vec<u8>> {
    let (head, _) = heads.iter().find(|(_, name)| name == b"HEAD")?;
    let at_head: Vec<&Vec<u8>> =
        heads.iter().filter(|(oid, name)| oid == head && name.starts_with(b"refs/heads/")).map(|(_, n)| n).collect();
    for preferred in [&b"refs/heads/main"[..], b"refs/heads/master"] {
        if let Some(n) = at_head.iter().find(|n| n.as_slice() == preferred) {
            return Some(n.to_vec());
        }
    }
    at_head.first().map(|n| n.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_read_in_any_pieces() {
        let text = format!(
            "# v2 git bundle\n{} refs/heads/main\n{} HEAD\n\nPACK\0\0\0\x02rest",
            "a".repeat(40),
            "a".repeat(40)
        );
        for size in [1, 2, 3, 7, 16, 17, 100] {
            let mut r = HeaderReader::default();
            for piece in text.as_bytes().chunks(size) {
                r.feed(piece).unwrap();
            }
            assert_eq!(r.finish().unwrap().refs.len(), 2, "{size}");
        }
        // Garbage is refused at once, a truncated header at the end.
        let mut r = HeaderReader::default();
        assert_eq!(r.feed(b"gitdir: /x"), Err(bundle::HeaderError::NotABundle));
        let mut r = HeaderReader::default();
        r.feed(b"# v2 git bu").unwrap();
        assert_eq!(r.finish(), Err(bundle::HeaderError::NotABundle));
        let mut r = HeaderReader::default();
        r.feed(&text.as_bytes()[..40]).unwrap();
        assert!(matches!(r.finish(), Err(bundle::HeaderError::Malformed(_))));
    }

    #[test]
    fn a_large_header_costs_its_size() {
        // 300,000 refs: 15 MiB of header, read in the pieces a client sends.
        let mut text = b"# v2 git bundle\n".to_vec();
        for i in 0..300_000u32 {
            text.extend_from_slice(format!("{:040x} refs/heads/b{i}\n", i).as_bytes());
        }
        text.extend_from_slice(b"\nPACK");
        let mut r = HeaderReader::default();
        for piece in text.chunks(32 << 10) {
            r.feed(piece).unwrap();
            assert!(r.buf.capacity() <= MAX_HEADER + 4, "{}", r.buf.capacity());
        }
        let header = r.finish().unwrap();
        assert_eq!(header.refs.len(), 300_000);
        assert_eq!(header.refs.capacity(), 300_000, "room for the refs, not twice that");
    }

    #[test]
    fn head_follows_the_bundle() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let heads = vec![
            (a.clone(), b"refs/heads/feature".to_vec()),
            (b.clone(), b"refs/heads/other".to_vec()),
            (a.clone(), b"refs/heads/main".to_vec()),
            (a.clone(), b"HEAD".to_vec()),
        ];
        assert_eq!(head_branch(&heads), Some(b"refs/heads/main".to_vec()));
        assert_eq!(head_branch(&heads[..1]), None);
    }
}
