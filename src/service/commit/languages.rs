//! CommitLanguages: bytes per language at a revision, as GitLab's language bar shows them. Upstream asks
//! github-linguist; here the `linguist` crate (GitHub Linguist's own language, heuristic and vendoring
//! data) classifies each blob of the tree, read in-process. Counted as Linguist counts: vendored paths,
//! binary blobs and languages that are not programming or markup are left out.

use sha2::Digest;
use tonic::Status;

use crate::git::validate_revision;
use crate::proto::gitaly::commit_languages_response::Language;
use crate::proto::gitaly::{CommitLanguagesRequest, CommitLanguagesResponse};
use crate::service::Ctx;

/// Linguist looks at this much of a file to tell text from binary.
const BINARY_SNIFF: usize = 8000;

pub async fn commit_languages(ctx: &Ctx, req: CommitLanguagesRequest) -> Result<CommitLanguagesResponse, Status> {
    if !req.revision.is_empty() {
        validate_revision(&req.revision).map_err(|e| Status::invalid_argument(e.to_string()))?;
    }
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let c = ctx.clone();
    let stats = crate::odb::blocking(move || {
        let repo = c.repos.open(&path)?;
        let revision = if req.revision.is_empty() { crate::odb::refs::default_branch(&repo)? } else { req.revision };
        let commit = crate::odb::resolve_commit(&repo, &revision).ok_or_else(|| {
            Status::unknown(format!("exit status 128: fatal: bad revision '{}'", String::from_utf8_lossy(&revision)))
        })?;
        let entries = crate::odb::tree::tree_entries(&repo, &commit.to_string(), b"", true)?;
        let mut stats: Vec<(&'static str, &'static str, u64)> = Vec::new();
        for e in entries {
            // Regular files only: trees, submodules and symlinks are not counted.
            if e.mode & 0o170000 != 0o100000 {
                continue;
            }
            if let Some((name, color, bytes)) = classify(&repo, &e.path, &e.oid)? {
                match stats.iter_mut().find(|(n, _, _)| *n == name) {
                    Some(s) => s.2 += bytes,
                    None => stats.push((name, color, bytes)),
                }
            }
        }
        Ok(stats)
    })
    .await?;
    let total: u64 = stats.iter().map(|(_, _, b)| b).sum();
    if stats.is_empty() {
        return Ok(CommitLanguagesResponse::default());
    }
    if total == 0 {
        return Err(Status::internal("linguist stats added up to zero"));
    }
    let mut languages: Vec<Language> = stats
        .into_iter()
        .map(|(name, color, bytes)| Language {
            name: name.to_string(),
            share: (100 * bytes) as f32 / total as f32,
            color: if color.is_empty() { fallback_color(name) } else { color.to_string() },
            file_count: 0,
            bytes,
        })
        .collect();
    languages.sort_by(|a, b| b.share.total_cmp(&a.share));
    Ok(CommitLanguagesResponse { languages })
}

/// The language a blob counts for (name, color, size), or `None` when Linguist would not count it.
fn classify(
    repo: &gix::Repository,
    path: &[u8],
    oid: &str,
) -> Result<Option<(&'static str, &'static str, u64)>, Status> {
    let Ok(path) = std::str::from_utf8(path) else { return Ok(None) };
    if linguist::is_vendored(path).unwrap_or(false) {
        return Ok(None);
    }
    let candidates = linguist::detect_language(path, None).unwrap_or_default();
    if !candidates.iter().any(|l| countable(l.definition)) {
        return Ok(None);
    }
    let id = gix::ObjectId::from_hex(oid.as_bytes()).map_err(|e| Status::internal(e.to_string()))?;
    let Some((_, data)) = crate::odb::read(repo, id)? else { return Ok(None) };
    if data[..data.len().min(BINARY_SNIFF)].contains(&0) {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&data);
    let detected = if candidates.len() > 1 {
        linguist::detect_language(path, Some(&text)).unwrap_or(candidates)
    } else {
        candidates
    };
    let Some(language) = detected.into_iter().next().filter(|l| countable(l.definition)) else { return Ok(None) };
    let color = language.definition.color.as_deref().unwrap_or("");
    Ok(Some((language.name, color, data.len() as u64)))
}

/// Linguist's language statistics count programming and markup languages only.
fn countable(l: &linguist_types::Language) -> bool {
    matches!(l.language_type, linguist_types::LanguageType::Programming | linguist_types::LanguageType::Markup)
}

/// Upstream's color for a language Linguist has none for: the first three bytes of its name's SHA-256.
fn fallback_color(name: &str) -> String {
    format!("#{}", hex::encode(&sha2::Sha256::digest(name.as_bytes())[..3]))
}
