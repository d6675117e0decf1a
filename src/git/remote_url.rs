//! URLs a client gives for git to fetch from or push to (FetchRemote, CreateRepositoryFromURL, AddRemote,
//! UpdateRemoteMirror, FindRemoteRepository): which ones git may be pointed at, how credentials in them
//! are kept out of argv, logs and errors, and the ssh command for a request's own key.
//!
//! The transport allow-list itself is git's (`protocol.allow`, set by
//! [`super::GitCommand::untrusted_remote`]); the checks here refuse early, with a clear message, what
//! that policy would refuse anyway, and what git would take as an option.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::LazyLock;

use base64::Engine;

const SCHEMES: &[&str] = &["http", "https", "ssh", "git", "git+ssh", "ssh+git"];

/// Why a URL is refused; the text never contains the URL's credentials.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UrlError {
    #[error("empty url")]
    Empty,
    #[error("url contains a control character")]
    Control,
    #[error("url looks like an option")]
    OptionLike,
    #[error("url transport {0:?} is not allowed")]
    Transport(String),
    #[error("url has no host")]
    NoHost,
    #[error("a password in a {0} url is not supported")]
    Password(String),
}

/// Checks `url` names a network remote git may reach: `http(s)://`, `ssh://`, `git://` or scp-like
/// `host:path`. Local paths, `file://`, `ext::` and other transports are refused.
pub fn validate(url: &str) -> Result<(), UrlError> {
    if url.is_empty() {
        return Err(UrlError::Empty);
    }
    if url.chars().any(char::is_control) {
        return Err(UrlError::Control);
    }
    if url.starts_with('-') {
        return Err(UrlError::OptionLike);
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        if !SCHEMES.contains(&scheme.as_str()) {
            return Err(UrlError::Transport(scheme));
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (userinfo, host) = authority.rsplit_once('@').unwrap_or(("", authority));
        if host.is_empty() || host.starts_with('-') {
            return Err(UrlError::NoHost);
        }
        // Only HTTP credentials can be moved into a header; elsewhere a password would sit in git's argv.
        if userinfo.contains(':') && scheme != "http" && scheme != "https" {
            return Err(UrlError::Password(scheme));
        }
        return Ok(());
    }
    if url.contains("::") {
        // git's `<transport>::<address>` form: ext::, fd::, and remote helpers.
        let transport = url.split("::").next().unwrap_or("");
        return Err(UrlError::Transport(transport.to_string()));
    }
    // scp-like `[user@]host:path`: git treats it as ssh only when the colon comes before any slash.
    match url.split_once(':') {
        Some((host, _)) if !host.contains('/') && !host.is_empty() => {
            let host = host.rsplit_once('@').map(|(_, h)| h).unwrap_or(host);
            if host.is_empty() || host.starts_with('-') {
                return Err(UrlError::NoHost);
            }
            Ok(())
        }
        _ => Err(UrlError::Transport("file".into())),
    }
}

/// Splits the credentials off an `http(s)://user:password@host/…` URL: the URL without them, and the
/// `Authorization` header git should send instead (as upstream does for CreateRepositoryFromURL).
pub fn split_credentials(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else { return (url.to_string(), None) };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let Some((userinfo, host)) = authority.rsplit_once('@') else { return (url.to_string(), None) };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return (url.to_string(), None);
    }
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let creds = match userinfo.split_once(':') {
        Some((user, password)) => format!("{}:{}", decode(user), decode(password)),
        None => decode(userinfo),
    };
    let header = format!("Authorization: Basic {}", base64::engine::general_purpose::STANDARD.encode(creds));
    (format!("{scheme}://{host}{}", &rest[end..]), Some(header))
}

static USERINFO: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"(?i)([a-z][a-z0-9+.-]*://)[^/@\s]+@").expect("valid regex"));

/// `text` with the credentials of every URL in it replaced, for errors and logs (git prints the URL it
/// failed to reach).
pub fn redact(text: &str) -> String {
    USERINFO.replace_all(text, "${1}[FILTERED]@").into_owned()
}

/// `ssh` as git should run it for a request's own key and known hosts, with the files it needs in a
/// private directory removed when this is dropped. Without a key or known hosts, None: git's default.
pub struct SshCommand {
    pub command: String,
    _dir: tempfile::TempDir,
}

impl SshCommand {
    pub fn new(in_dir: &std::path::Path, key: &str, known_hosts: &str) -> std::io::Result<Option<SshCommand>> {
        if key.is_empty() && known_hosts.is_empty() {
            return Ok(None);
        }
        let dir = tempfile::Builder::new().prefix("ssh-").tempdir_in(in_dir)?;
        let write = |name: &str, content: &str| -> std::io::Result<std::path::PathBuf> {
            let path = dir.path().join(name);
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o400).open(&path)?;
            f.write_all(content.as_bytes())?;
            Ok(path)
        };
        let quote = |p: &std::path::Path| format!("'{}'", p.to_string_lossy().replace('\'', r"'\''"));
        let mut command = String::from("ssh");
        if !key.is_empty() {
            let mut key = key.to_string();
            if !key.ends_with('\n') {
                key.push('\n');
            }
            let path = write("ssh-key", &key)?;
            command.push_str(&format!(" -oIdentitiesOnly=yes -oIdentityFile={}", quote(&path)));
        }
        if !known_hosts.is_empty() {
            let path = write("known-hosts", known_hosts)?;
            command.push_str(&format!(
                " -oStrictHostKeyChecking=yes -oCheckHostIP=no -oUserKnownHostsFile={}",
                quote(&path)
            ));
        }
        Ok(Some(SshCommand { command, _dir: dir }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_network_transports_pass() {
        for ok in [
            "https://gitlab.com/a/b.git",
            "http://u:p@h:8080/x",
            "ssh://git@h/x.git",
            "git://h/x",
            "git@gitlab.com:a/b.git",
            "h:x",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        for (bad, err) in [
            ("", UrlError::Empty),
            ("file:///etc", UrlError::Transport("file".into())),
            ("/srv/git/repo.git", UrlError::Transport("file".into())),
            ("./repo", UrlError::Transport("file".into())),
            ("../../x:y", UrlError::Transport("file".into())),
            ("ext::sh -c touch% /tmp/pwned", UrlError::Transport("ext".into())),
            ("fd::3", UrlError::Transport("fd".into())),
            ("-uhttps://x", UrlError::OptionLike),
            ("https://h/x\n", UrlError::Control),
            ("ssh://-oProxyCommand=x/y", UrlError::NoHost),
            ("https:///path", UrlError::NoHost),
            ("ssh://git:secret@h/x.git", UrlError::Password("ssh".into())),
            ("-oProxyCommand=x:y", UrlError::OptionLike),
        ] {
            assert_eq!(validate(bad), Err(err), "{bad:?}");
        }
    }

    #[test]
    fn credentials_move_to_a_header_and_leave_no_trace() {
        let (url, header) = split_credentials("https://user:p%40ss@example.com/a.git");
        assert_eq!(url, "https://example.com/a.git");
        let want = base64::engine::general_purpose::STANDARD.encode("user:p@ss");
        assert_eq!(header.unwrap(), format!("Authorization: Basic {want}"));
        assert_eq!(split_credentials("https://example.com/a@b").1, None);
        assert_eq!(
            redact("fatal: unable to access 'https://user:secret@h/x/': 403"),
            "fatal: unable to access 'https://[FILTERED]@h/x/': 403"
        );
    }

    #[test]
    fn ssh_files_are_private_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let cmd = SshCommand::new(tmp.path(), "KEY", "h ssh-ed25519 AAAA").unwrap().unwrap();
        assert!(cmd.command.contains("IdentityFile=") && cmd.command.contains("StrictHostKeyChecking=yes"));
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        drop(cmd);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        assert!(SshCommand::new(tmp.path(), "", "").unwrap().is_none());
    }
}
