//! `<storage>/.gitaly-metadata`: the storage's filesystem id, as upstream writes it.
//!
//! GitLab (and Praefect) tell storages apart by this id, so it is created once, atomically, and never
//! rewritten.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = ".gitaly-metadata";

#[derive(Debug, Serialize, Deserialize)]
pub struct Metadata {
    pub gitaly_filesystem_id: String,
}

/// Writes the metadata file with a new id unless one exists.
pub fn write_if_absent(storage: &Path) -> std::io::Result<()> {
    let path = storage.join(FILE_NAME);
    if path.exists() {
        return Ok(());
    }
    let meta = Metadata { gitaly_filesystem_id: uuid::Uuid::new_v4().to_string() };
    let mut tmp = tempfile::NamedTempFile::new_in(storage)?;
    let mut line = serde_json::to_vec(&meta)?;
    line.push(b'\n');
    tmp.write_all(&line)?;
    tmp.as_file().sync_all()?;
    match tmp.persist_noclobber(&path) {
        Ok(_) => Ok(()),
        // Another process won the race: its id stands.
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.error),
    }
}

/// The filesystem id, or None when the file is missing or unreadable.
pub fn read_id(storage: &Path) -> Option<String> {
    let data = std::fs::read(storage.join(FILE_NAME)).ok()?;
    serde_json::from_slice::<Metadata>(&data).ok().map(|m| m.gitaly_filesystem_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_once() {
        let d = tempfile::tempdir().unwrap();
        write_if_absent(d.path()).unwrap();
        let id = read_id(d.path()).unwrap();
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
        write_if_absent(d.path()).unwrap();
        assert_eq!(read_id(d.path()).unwrap(), id);
        let raw = std::fs::read_to_string(d.path().join(FILE_NAME)).unwrap();
        assert_eq!(raw, format!("{{\"gitaly_filesystem_id\":\"{id}\"}}\n"));
    }
}
