//! Validation of per-request `git_config_options`.
//!
//! Clients may tune git (e.g. `uploadpack.allowFilter=true`), but most config keys can make git run a
//! program, read another file, or change what the repository directory is (`core.bare`, `core.worktree`).
//! So only an allow-list of keys that tune the transfer protocol is accepted; everything else is refused.

/// Why a `git_config_options` entry was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigOptionError {
    #[error("cannot convert invalid config key: {0:?}")]
    NotKeyValue(String),
    #[error("config key {0:?} failed regexp validation")]
    BadKey(String),
    #[error("config key {0:?} is not allowed in git_config_options")]
    Forbidden(String),
    #[error("config value for {0:?} contains a newline or NUL byte")]
    BadValue(String),
}

/// Keys (lower-case) a request may set: what GitLab sends, and transfer tuning that reads no files and
/// runs nothing.
const ALLOWED: &[&str] = &[
    "core.bigfilethreshold",
    "pack.compression",
    "pack.depth",
    "pack.threads",
    "pack.window",
    "pack.windowmemory",
    "receive.advertisepushoptions",
    "receive.hiderefs",
    "receive.maxinputsize",
    "transfer.hiderefs",
    "uploadpack.allowanysha1inwant",
    "uploadpack.allowfilter",
    "uploadpack.allowreachablesha1inwant",
    "uploadpack.allowrefinwant",
    "uploadpack.allowtipsha1inwant",
    "uploadpack.hiderefs",
    "uploadpack.keepalive",
];

/// Checks one "key=value" entry from a request.
pub fn validate_config_option(option: &str) -> Result<(), ConfigOptionError> {
    let (key, value) = option.split_once('=').ok_or_else(|| ConfigOptionError::NotKeyValue(option.to_string()))?;
    if !valid_key_shape(key) {
        return Err(ConfigOptionError::BadKey(key.to_string()));
    }
    if value.contains(['\n', '\0']) {
        return Err(ConfigOptionError::BadValue(key.to_string()));
    }
    if is_denied(key) {
        return Err(ConfigOptionError::Forbidden(key.to_string()));
    }
    Ok(())
}

/// Upstream's `^[[:alnum:]]+(\.[-/_a-zA-Z0-9]+)+$`.
fn valid_key_shape(key: &str) -> bool {
    let mut parts = key.split('.');
    let section = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    !section.is_empty()
        && section.chars().all(|c| c.is_ascii_alphanumeric())
        && !rest.is_empty()
        && rest.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-/_".contains(c)))
}

fn is_denied(key: &str) -> bool {
    // Section and variable names are case-insensitive; none of the allowed keys has a subsection.
    !ALLOWED.contains(&key.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_ordinary_tuning() {
        for ok in [
            "uploadpack.allowFilter=true",
            "uploadpack.allowAnySHA1InWant=true",
            "receive.hideRefs=refs/x",
            "transfer.hideRefs=!refs",
            "pack.windowMemory=100m",
        ] {
            assert_eq!(validate_config_option(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_dangerous_or_malformed_keys() {
        for bad in [
            "core.sshCommand=touch /tmp/x",
            "CORE.SSHCOMMAND=x",
            "uploadpack.packObjectsHook=/bin/sh",
            "include.path=/etc/passwd",
            "includeIf.gitdir:/x.path=/y",
            "filter.lfs.smudge=sh",
            "alias.x=!sh",
            "url.http://evil.insteadOf=https://",
            "core.hooksPath=/tmp",
            "diff.x.textconv=sh",
            "nokey",
            "core=1",
            "-c.x=1",
            "core.x\n=1",
            "core.pager=less",
            "remote.origin.uploadpack=sh",
        ] {
            assert!(validate_config_option(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(validate_config_option("core.bigFileThreshold=1\nx").is_err());
    }
}
