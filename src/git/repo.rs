//! Typed repository operations built on the command layer: resolving revisions, reading commits, writing
//! objects with exact bytes, and compare-and-swap ref updates. Used by the daemon and the workers alike.

use std::path::Path;

use super::{GitCmdFactory, GitError, Sub};
use crate::proto::gitaly::{CommitTrailer, GitCommit};

/// The all-zero object id: "no such ref" as an expected old value, "delete" as a new one.
pub const ZERO_OID: &str = "0000000000000000000000000000000000000000";

/// A ref update that lost a race or whose expected old value did not match.
#[derive(Debug, thiserror::Error)]
#[error("update {reference}: {stderr}")]
pub struct UpdateRefError {
    pub reference: String,
    pub stderr: String,
}

/// A person and time for a new commit or tag, already sanitized.
#[derive(Debug, Clone)]
pub struct Signature {
    pub name: String,
    pub email: String,
    pub unix: i64,
}

/// Why a signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("failed to parse signature - Signature cannot have an empty name or email")]
pub struct EmptySignature;

impl Signature {
    /// Removes `\n`, `<` and `>` and trims surrounding punctuation and whitespace, as upstream does.
    pub fn new(name: &[u8], email: &[u8], unix: i64) -> Result<Signature, EmptySignature> {
        let clean = |b: &[u8]| {
            let s: String = String::from_utf8_lossy(b).chars().filter(|c| !matches!(c, '\n' | '<' | '>')).collect();
            s.trim_matches(|c: char| c.is_whitespace() || c.is_control() || ".,:;<>\"'".contains(c)).to_string()
        };
        let (name, email) = (clean(name), clean(email));
        if name.is_empty() || email.is_empty() {
            return Err(EmptySignature);
        }
        Ok(Signature { name, email, unix })
    }

    pub fn line(&self) -> String {
        format!("{} <{}> {} +0000", self.name, self.email, self.unix)
    }
}

/// One repository, addressed through the command layer.
pub struct Repo<'a> {
    pub git: &'a GitCmdFactory,
    pub path: &'a Path,
}

impl<'a> Repo<'a> {
    pub fn new(git: &'a GitCmdFactory, path: &'a Path) -> Self {
        Repo { git, path }
    }

    /// `rev-parse --verify` of a client revision; None when it does not resolve.
    pub async fn resolve(&self, rev: &str) -> Result<Option<String>, GitError> {
        if rev.is_empty() || rev.starts_with('-') {
            return Ok(None);
        }
        let out = self
            .git
            .command(self.path, Sub::RevParse)
            .flag("--verify")
            .flag("--quiet")
            .user_arg(rev)
            .run_to_end()
            .await?;
        Ok(out.exit.success().then(|| out.stdout_text()).filter(|s| !s.is_empty()))
    }

    /// The object type of an object id ("commit", "tag", "tree", "blob").
    pub async fn object_type(&self, oid: &str) -> Result<Option<String>, GitError> {
        let out = self.git.command(self.path, Sub::CatFile).flag("-t").trusted_arg(oid).run_to_end().await?;
        Ok(out.exit.success().then(|| out.stdout_text()))
    }

    /// Reads and parses a commit (any revision that peels to a commit).
    pub async fn read_commit(&self, rev: &str) -> Result<Option<GitCommit>, GitError> {
        let Some(oid) = self.resolve(&format!("{rev}^{{commit}}")).await? else { return Ok(None) };
        let out = self.git.command(self.path, Sub::CatFile).flag("commit").trusted_arg(&oid).run_to_end().await?;
        if !out.exit.success() {
            return Ok(None);
        }
        Ok(Some(crate::odb::commit::parse_commit(&oid, &out.stdout)))
    }

    /// The trailers of commit `oid`, as git reads them.
    pub async fn trailers(&self, oid: &str) -> Result<Vec<CommitTrailer>, GitError> {
        let out = self
            .git
            .command(self.path, Sub::Show)
            .flag("--format=%(trailers:unfold,separator=%x00)")
            .flag("--no-patch")
            .user_arg(oid)
            .run_to_end()
            .await?;
        if !out.exit.success() {
            let code = out.exit.code;
            return Err(GitError::Failed { sub: "show", code, stderr: out.stderr_text() });
        }
        let line = out.stdout.split(|b| *b == b'\n').next().unwrap_or_default();
        Ok(parse_trailers(line))
    }

    pub async fn has_branches(&self) -> Result<bool, GitError> {
        let out = self
            .git
            .command(self.path, Sub::ForEachRef)
            .flag("--format=%(refname)")
            .flag("--count=1")
            .trusted_arg("refs/heads/")
            .output()
            .await?;
        Ok(!out.stdout.is_empty())
    }

    /// A digest of the refs matching `patterns` (all refs when empty) and their values: equal digests mean
    /// none of them moved in between (what the daemon checks after a worker died mid-write).
    pub async fn refs_digest(&self, patterns: &[String]) -> Result<[u8; 32], GitError> {
        use sha2::Digest;
        let mut cmd = self.git.command(self.path, Sub::ForEachRef).flag("--format=%(objectname) %(refname)");
        for p in patterns {
            cmd = cmd.user_arg(p);
        }
        let out = cmd.output().await?;
        Ok(sha2::Sha256::digest(&out.stdout).into())
    }

    /// Compare-and-swap: sets `reference` to `new` only if it currently is `old` (ZERO_OID: must not
    /// exist). `new` = ZERO_OID deletes. `old` = None updates unconditionally.
    pub async fn update_ref(&self, reference: &str, new: &str, old: Option<&str>) -> Result<(), UpdateRefError> {
        // Fields of `update-ref -z --stdin` end at a NUL: one inside a value would let it carry commands of
        // its own (delete or move any ref). No ref name or object id holds one.
        if [reference, new, old.unwrap_or("")].iter().any(|f| f.contains('\0')) {
            return Err(UpdateRefError { reference: reference.to_string(), stderr: "NUL byte in ref update".into() });
        }
        let mut stdin = format!("update {reference}\0{new}\0").into_bytes();
        stdin.extend_from_slice(old.unwrap_or("").as_bytes());
        stdin.push(0);
        let result = self
            .git
            .command(self.path, Sub::UpdateRef)
            .flag("-z")
            .flag("--stdin")
            .output_with_stdin_to_end(stdin)
            .await;
        result.map(|_| ()).map_err(|e| UpdateRefError {
            reference: reference.to_string(),
            stderr: match e {
                GitError::Failed { stderr, .. } => stderr,
                e => e.to_string(),
            },
        })
    }

    /// Fetches commit `oid` from the repository at `from` (a path the daemon resolved), no refs or tags.
    pub async fn fetch_commit(&self, from: &Path, oid: &str) -> Result<(), GitError> {
        let cmd = self.git.command(self.path, Sub::Fetch).flag("--no-tags").flag("--quiet");
        cmd.trusted_arg(from).trusted_arg(oid).output().await.map(|_| ())
    }

    /// Writes an object from exact bytes and returns its id: in-process (`odb::write`), as a loose object
    /// the way `hash-object -w` writes it, without the cost of a process per object.
    pub async fn write_object(&self, kind: &str, data: Vec<u8>) -> Result<String, GitError> {
        let failed = |e: String| GitError::Io { sub: "hash-object", source: std::io::Error::other(e) };
        let kind = match kind {
            "blob" => gix::object::Kind::Blob,
            "commit" => gix::object::Kind::Commit,
            "tree" => gix::object::Kind::Tree,
            "tag" => gix::object::Kind::Tag,
            other => return Err(failed(format!("unknown object type {other:?}"))),
        };
        let repo = crate::odb::open_uncached(self.path).map_err(|e| failed(e.to_string()))?;
        crate::odb::write::object(&repo, kind, &data).map_err(|s| failed(s.message().to_string()))
    }

    /// Writes a commit with exactly this message (no newline added) and returns its id.
    pub async fn write_commit(
        &self,
        tree: &str,
        parents: &[&str],
        author: &Signature,
        committer: &Signature,
        message: &[u8],
    ) -> Result<String, GitError> {
        self.write_commit_as(tree, parents, author.line().as_bytes(), committer, message).await
    }

    /// As [`Repo::write_commit`], with the author line given as it is (e.g. another commit's, kept with its
    /// date and time zone by a cherry-pick).
    pub async fn write_commit_as(
        &self,
        tree: &str,
        parents: &[&str],
        author_line: &[u8],
        committer: &Signature,
        message: &[u8],
    ) -> Result<String, GitError> {
        self.write_object("commit", commit_bytes(tree, parents, author_line, committer, message)).await
    }

    /// Three-way merge of two commits without touching any ref or worktree (`git merge-tree
    /// --write-tree`): Ok(tree) when clean, Err(conflicting paths) otherwise.
    pub async fn merge_tree(&self, ours: &str, theirs: &str) -> Result<Result<String, Vec<String>>, GitError> {
        self.merge_tree_with_base(ours, theirs, None).await
    }

    /// As [`Repo::merge_tree`], with the merge base given instead of computed (`--merge-base`): with
    /// `base` = C^ and `theirs` = C it applies C's change to `ours` (a cherry-pick); with `base` = C and
    /// `theirs` = C^ it takes C's change back (a revert). All three are object ids.
    pub async fn merge_tree_with_base(
        &self,
        ours: &str,
        theirs: &str,
        base: Option<&str>,
    ) -> Result<Result<String, Vec<String>>, GitError> {
        let mut cmd = self
            .git
            .command(self.path, Sub::MergeTree)
            .flag("--write-tree")
            .flag("--allow-unrelated-histories")
            .flag("--name-only")
            .flag("--no-messages");
        if let Some(base) = base {
            cmd = cmd.flag(format!("--merge-base={base}"));
        }
        let out = cmd.trusted_arg(ours).trusted_arg(theirs).run_to_end().await?;
        let text = out.stdout_text();
        let mut lines = text.lines();
        let tree = lines.next().unwrap_or_default().to_string();
        match out.exit.code {
            0 => Ok(Ok(tree)),
            1 => Ok(Err(lines.filter(|l| !l.is_empty()).map(str::to_string).collect())),
            code => Err(GitError::Failed { sub: "merge-tree", code, stderr: out.stderr_text() }),
        }
    }

    /// As [`Repo::merge_tree`], keeping what a conflict is made of: the merged tree (conflicted files hold
    /// git's conflict markers, labelled with the two commit ids as given) and the index stages of every
    /// conflicted path, in git's order. `stages` is empty for a clean merge.
    pub async fn merge_tree_stages(&self, ours: &str, theirs: &str) -> Result<MergeTree, GitError> {
        let out = self
            .git
            .command(self.path, Sub::MergeTree)
            // Conflicts as GitLab's editor reads them, whatever the repository's config says.
            .config("merge.conflictStyle", "merge")
            .flag("--write-tree")
            .flag("--allow-unrelated-histories")
            .flag("--no-messages")
            .flag("-z")
            .trusted_arg(ours)
            .trusted_arg(theirs)
            .run_to_end()
            .await?;
        if !matches!(out.exit.code, 0 | 1) {
            return Err(GitError::Failed { sub: "merge-tree", code: out.exit.code, stderr: out.stderr_text() });
        }
        let mut items = out.stdout.split(|b| *b == 0).filter(|i| !i.is_empty());
        let tree = String::from_utf8_lossy(items.next().unwrap_or_default()).into_owned();
        let mut stages = Vec::new();
        for item in items {
            // "<mode> <oid> <stage>\t<path>"
            let Some(tab) = item.iter().position(|b| *b == b'\t') else { continue };
            let meta = String::from_utf8_lossy(&item[..tab]);
            let mut f = meta.split(' ');
            let (Some(mode), Some(oid), Some(stage)) = (f.next(), f.next(), f.next()) else { continue };
            stages.push(Stage {
                mode: u32::from_str_radix(mode, 8).unwrap_or(0),
                oid: oid.to_string(),
                stage: stage.parse().unwrap_or(0),
                path: item[tab + 1..].to_vec(),
            });
        }
        Ok(MergeTree { tree, stages })
    }

    /// Writes a tree: `base`'s (or an empty one) with `entries` put in place, through a scratch index
    /// (`read-tree`, `update-index --index-info`, `write-tree`), no worktree. Paths must hold no NUL.
    pub async fn edit_tree(&self, base: Option<&str>, entries: &[TreeEdit]) -> Result<String, GitError> {
        let dir = tempfile::tempdir().map_err(|source| GitError::Io { sub: "write-tree", source })?;
        let index = dir.path().join("index");
        if let Some(base) = base {
            self.git.command(self.path, Sub::ReadTree).env("GIT_INDEX_FILE", &index).trusted_arg(base).output().await?;
        }
        let mut info = Vec::new();
        for e in entries {
            info.extend_from_slice(format!("{:o} {}\t", e.mode, e.oid).as_bytes());
            info.extend_from_slice(&e.path);
            info.push(0);
        }
        self.git
            .command(self.path, Sub::UpdateIndex)
            .env("GIT_INDEX_FILE", &index)
            .flag("-z")
            .flag("--index-info")
            .output_with_stdin(info)
            .await?;
        let out = self.git.command(self.path, Sub::WriteTree).env("GIT_INDEX_FILE", &index).output().await?;
        Ok(out.stdout_text())
    }

    /// Whether `ancestor` is an ancestor of (or equal to) `descendant`.
    pub async fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<Option<bool>, GitError> {
        let out = self
            .git
            .command(self.path, Sub::MergeBase)
            .flag("--is-ancestor")
            .trusted_arg(ancestor)
            .trusted_arg(descendant)
            .run_to_end()
            .await?;
        Ok(match out.exit.code {
            0 => Some(true),
            1 => Some(false),
            _ => None,
        })
    }

    /// Points HEAD at `reference` (a client or another server's value: after `--end-of-options`; git
    /// refuses anything outside `refs/`).
    pub async fn set_head(&self, reference: &str) -> Result<(), GitError> {
        self.git.command(self.path, Sub::SymbolicRef).trusted_arg("HEAD").user_arg(reference).output().await.map(|_| ())
    }

    /// `git check-ref-format` of a full ref name.
    pub async fn valid_ref_name(&self, name: &str) -> Result<bool, GitError> {
        if name.starts_with('-') {
            return Ok(false);
        }
        let out = self.git.bare(Sub::CheckRefFormat).trusted_arg(name).run_to_end().await?;
        Ok(out.exit.success())
    }
}

/// A commit object's bytes as rgitaly writes them: tree, parents, author line as given, committer, a blank
/// line, the message exactly as given.
pub fn commit_bytes(
    tree: &str,
    parents: &[&str],
    author_line: &[u8],
    committer: &Signature,
    message: &[u8],
) -> Vec<u8> {
    let mut data = format!("tree {tree}\n").into_bytes();
    for p in parents {
        data.extend_from_slice(format!("parent {p}\n").as_bytes());
    }
    data.extend_from_slice(b"author ");
    data.extend_from_slice(author_line);
    data.extend_from_slice(format!("\ncommitter {}\n\n", committer.line()).as_bytes());
    data.extend_from_slice(message);
    data
}

/// A merge as `git merge-tree --write-tree` leaves it (see [`Repo::merge_tree_stages`]).
#[derive(Debug, Clone)]
pub struct MergeTree {
    pub tree: String,
    pub stages: Vec<Stage>,
}

/// One index stage of a conflicted path: 1 the merge base's, 2 ours, 3 theirs.
#[derive(Debug, Clone)]
pub struct Stage {
    pub mode: u32,
    pub oid: String,
    pub stage: u8,
    pub path: Vec<u8>,
}

/// A tree entry to put in place with [`Repo::edit_tree`]; mode 0 removes the path.
#[derive(Debug, Clone)]
pub struct TreeEdit {
    pub mode: u32,
    pub oid: String,
    pub path: Vec<u8>,
}

/// Upstream's limits when reading trailers: at most this many, keys and values no longer than these.
const MAX_TRAILERS: usize = 64;
const MAX_TRAILER_KEY: usize = 128;
const MAX_TRAILER_VALUE: usize = 512;

/// Parses `git show --format=%(trailers:unfold,separator=%x00)` output as upstream's trailer parser does.
pub fn parse_trailers(input: &[u8]) -> Vec<CommitTrailer> {
    let mut out = Vec::new();
    for item in input.split(|b| *b == 0) {
        if out.len() >= MAX_TRAILERS {
            break;
        }
        let Some(sep) = item.iter().position(|b| *b == b':').filter(|p| *p > 0) else { continue };
        let (key, value) = (&item[..sep], item[sep + 1..].trim_ascii());
        if key.len() > MAX_TRAILER_KEY || value.len() > MAX_TRAILER_VALUE {
            break;
        }
        out.push(CommitTrailer { key: key.to_vec(), value: value.to_vec() });
    }
    out
}

/// Whether a string is a full 40-character lower-case hex object id.
pub fn is_oid(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_sanitized_like_upstream() {
        let s = Signature::new(b".,:;<>\"'\nJane Doe.,:;<>'\"\n", b"jane@example.com", 1).unwrap();
        assert_eq!(s.name, "Jane Doe");
        assert_eq!(Signature::new(b"Ja<ne\n D>oe", b"a@b", 1).unwrap().name, "Jane Doe");
        assert_eq!(Signature::new(b" <> ", b"a@b", 1).unwrap_err(), EmptySignature);
    }
}
