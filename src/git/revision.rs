//! Upstream's revision check, applied before a client revision reaches git.

/// Why a revision was refused; the texts are upstream's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RevisionError {
    #[error("empty revision")]
    Empty,
    #[error("revision can't start with '-'")]
    Option,
    #[error("revision can't contain whitespace")]
    Whitespace,
    #[error("revision can't contain NUL")]
    Nul,
    #[error("revision can't contain ':'")]
    Colon,
}

pub fn validate_revision(rev: &[u8]) -> Result<(), RevisionError> {
    if rev.is_empty() {
        return Err(RevisionError::Empty);
    }
    if rev[0] == b'-' {
        return Err(RevisionError::Option);
    }
    if rev.iter().any(|b| b.is_ascii_whitespace()) {
        return Err(RevisionError::Whitespace);
    }
    if rev.contains(&0) {
        return Err(RevisionError::Nul);
    }
    if rev.contains(&b':') {
        return Err(RevisionError::Colon);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks() {
        assert_eq!(validate_revision(b"main"), Ok(()));
        assert_eq!(validate_revision(b"HEAD~2"), Ok(()));
        assert_eq!(validate_revision(b""), Err(RevisionError::Empty));
        assert_eq!(validate_revision(b"--all"), Err(RevisionError::Option));
        assert_eq!(validate_revision(b"a b"), Err(RevisionError::Whitespace));
        assert_eq!(validate_revision(b"a\0"), Err(RevisionError::Nul));
        assert_eq!(validate_revision(b"HEAD:README"), Err(RevisionError::Colon));
    }
}
