//! FindLicense: the license of the project at HEAD, as GitLab shows it. Upstream asked Ruby's licensee;
//! here the root tree's license file (LICENSE, LICENCE, COPYING, UNLICENSE, with or without an
//! extension) is matched by the `spdx` crate's detector (askalono's) against the licenses
//! choosealicense.com lists, the ones licensee knows. The answer is licensee's key: the SPDX id in lower
//! case, `-only` dropped (`mit`, `apache-2.0`, `gpl-3.0`), `other` for a license file that matches none,
//! and empty when there is no license file or no HEAD.

use std::sync::LazyLock;

use spdx::detection::{Store, TextData};
use tonic::Status;

use crate::proto::gitaly::{FindLicenseRequest, FindLicenseResponse};
use crate::service::Ctx;

/// The licenses licensee recognises (choosealicense.com's list), by SPDX id.
const KNOWN: &[&str] = &[
    "0BSD",
    "AFL-3.0",
    "AGPL-3.0-only",
    "Apache-2.0",
    "Artistic-2.0",
    "BlueOak-1.0.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "BSD-4-Clause",
    "BSL-1.0",
    "CC-BY-4.0",
    "CC-BY-SA-4.0",
    "CC0-1.0",
    "ECL-2.0",
    "EPL-1.0",
    "EPL-2.0",
    "EUPL-1.1",
    "EUPL-1.2",
    "GPL-2.0-only",
    "GPL-3.0-only",
    "ISC",
    "LGPL-2.1-only",
    "LGPL-3.0-only",
    "LPPL-1.3c",
    "MIT",
    "MPL-2.0",
    "MS-PL",
    "MS-RL",
    "MulanPSL-2.0",
    "NCSA",
    "ODbL-1.0",
    "OFL-1.1",
    "OSL-3.0",
    "PostgreSQL",
    "UPL-1.0",
    "Unlicense",
    "Vim",
    "WTFPL",
    "Zlib",
];

/// A match at least this close names the license (askalono's own "confident" level).
const THRESHOLD: f32 = 0.9;
/// License files are short; anything longer is not read whole.
const MAX_LICENSE: u64 = 1 << 20;

static STORE: LazyLock<Store> = LazyLock::new(|| {
    let mut store = Store::new();
    for (id, text) in spdx::text::LICENSE_TEXTS.iter().filter(|(id, _)| KNOWN.contains(id)) {
        store.add_license(id.to_string(), TextData::from(*text));
    }
    store
});

/// licensee's key for an SPDX id.
fn key(id: &str) -> String {
    id.trim_end_matches("-only").to_ascii_lowercase()
}

/// Whether a root tree entry is a license file by licensee's naming.
fn is_license_file(name: &[u8]) -> bool {
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    let stem = name.split_once('.').map_or(name.as_str(), |(s, ext)| {
        if ["md", "markdown", "txt", "rst", "html", "mkd", "org", "adoc", "asc"].contains(&ext) {
            s
        } else {
            ""
        }
    });
    ["license", "licence", "copying", "unlicense"].contains(&stem)
}

pub async fn find_license(ctx: &Ctx, req: FindLicenseRequest) -> Result<FindLicenseResponse, Status> {
    let path = ctx.locator.repo_path(req.repository.as_ref())?;
    let c = ctx.clone();
    let text = crate::odb::blocking(move || {
        let repo = c.repos.open(&path)?;
        let Ok(commit) = repo.head_commit() else { return Ok(None) };
        let tree = commit.tree().map_err(|e| Status::internal(e.to_string()))?;
        for entry in tree.iter() {
            let entry = entry.map_err(|e| Status::internal(e.to_string()))?;
            if !entry.mode().is_blob() || !is_license_file(entry.filename()) {
                continue;
            }
            let id = entry.oid().to_owned();
            // A huge "license" is no license text licensee would know: not read into memory.
            let size = crate::odb::header(&repo, id)?.map_or(0, |(_, size)| size);
            if size > MAX_LICENSE {
                return Ok(Some(String::new()));
            }
            let data = crate::odb::blob_prefix(&repo, id, size, MAX_LICENSE)?;
            return Ok(Some(String::from_utf8_lossy(&data).into_owned()));
        }
        Ok(None)
    })
    .await?;
    let Some(text) = text else { return Ok(FindLicenseResponse { license_short_name: String::new() }) };
    let short = tokio::task::spawn_blocking(move || {
        let found = STORE.analyze(&TextData::from(text.as_str()));
        if found.score >= THRESHOLD {
            key(found.name)
        } else {
            "other".to_string()
        }
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?;
    Ok(FindLicenseResponse { license_short_name: short })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn license_file_names_as_licensee_reads_them() {
        for yes in ["LICENSE", "LICENSE.md", "licence.txt", "COPYING", "UNLICENSE", "License.rst"] {
            assert!(is_license_file(yes.as_bytes()), "{yes}");
        }
        for no in ["README.md", "LICENSE.rb", "license-check.sh", "COPYING.LESSER.x"] {
            assert!(!is_license_file(no.as_bytes()), "{no}");
        }
        assert_eq!(key("GPL-3.0-only"), "gpl-3.0");
        assert_eq!(key("Apache-2.0"), "apache-2.0");
    }

    #[test]
    fn texts_are_recognised() {
        let mit = spdx::text::LICENSE_TEXTS.iter().find(|(id, _)| *id == "MIT").unwrap().1;
        let filled = mit.replace("<year>", "2021").replace("<copyright holders>", "Jane Doe");
        let m = STORE.analyze(&TextData::from(filled.as_str()));
        assert_eq!((key(m.name), m.score >= THRESHOLD), ("mit".to_string(), true));
        assert!(STORE.analyze(&TextData::from("All rights reserved. Do not copy.")).score < THRESHOLD);
    }
}
