//! Validation of per-request `git_config_options`.
//!
//! Clients may tune git (e.g. `uploadpack.allowFilter=true`), but a config key can also make git run a
//! program or read another file. Keys must have upstream's shape, and keys that execute commands, load
//! other config, or redirect the repository are refused outright.

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

/// Keys (lower-cased; `*` matches one subsection) that run commands or read other files.
const DENIED: &[&str] = &[
    "alias.*",
    "core.alternaterefscommand",
    "core.askpass",
    "core.editor",
    "core.fsmonitor",
    "core.gitproxy",
    "core.hookspath",
    "core.pager",
    "core.sshcommand",
    "core.worktree",
    "core.attributesfile",
    "core.excludesfile",
    "credential.helper",
    "credential.*.helper",
    "diff.external",
    "diff.*.command",
    "diff.*.textconv",
    "filter.*.clean",
    "filter.*.smudge",
    "filter.*.process",
    "gpg.program",
    "gpg.*.program",
    "http.proxy",
    "include.path",
    "includeif.*.path",
    "merge.*.driver",
    "pager.*",
    "protocol.allow",
    "protocol.*.allow",
    "receive.procreceiverefs",
    "remote.*.proxy",
    "remote.*.receivepack",
    "remote.*.uploadpack",
    "remote.*.vcs",
    "sendemail.*",
    "sequence.editor",
    "ssh.variant",
    "uploadarchive.allowunreachable",
    "uploadpack.packobjectshook",
    "url.*.insteadof",
    "url.*.pushinsteadof",
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
    // Section and variable names are case-insensitive; subsections are not, but lower-casing only widens
    // what is refused.
    let key = key.to_ascii_lowercase();
    let parts: Vec<&str> = key.split('.').collect();
    DENIED.iter().any(|pattern| {
        let pat: Vec<&str> = pattern.split('.').collect();
        match (pat.as_slice(), parts.as_slice()) {
            ([ps, "*"], [s, ..]) => ps == s,
            ([ps, "*", pv], [s, .., v]) if parts.len() >= 3 => ps == s && pv == v,
            ([ps, pv], [s, v]) => ps == s && pv == v,
            _ => false,
        }
    })
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
