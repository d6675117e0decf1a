//! SetConfig and DeleteConfig: keys in the repository's own `config`.
//!
//! Upstream writes any key a client names. Many keys make git run a program or read another file the
//! next time it runs in the repository (`core.hooksPath`, `core.fsmonitor`, `include.path`, filters,
//! textconv), so a client that can call SetConfig could run code on the server. GitLab sets only its own
//! `gitlab.*` keys (`gitlab.fullpath`), so SetConfig accepts the `gitlab` section and nothing else, and
//! DeleteConfig refuses the sections whose removal breaks a repository (`core`, `extensions`) or changes
//! what else git reads (`include`, `includeIf`). Values are written in-process (gix-config, under git's own
//! `config.lock`), not on a command line where `ps` shows them.

use std::io::Write;
use std::path::Path;

use gix::bstr::ByteSlice;
use tonic::Status;

use crate::git::Sub;
use crate::proto::gitaly::set_config_request::entry::Value;
use crate::proto::gitaly::*;
use crate::service::Context;

/// A key as git writes it: `section[.subsection].name`, section and name of letters, digits and `-`.
fn valid_key(key: &str) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    let plain = |p: &str| {
        !p.is_empty()
            && p.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    parts.len() >= 2 && plain(parts[0]) && plain(parts[parts.len() - 1]) && !key.contains(['\n', '\0', '"', '\\'])
}

fn section(key: &str) -> String {
    key.split('.').next().unwrap_or_default().to_ascii_lowercase()
}

pub async fn set_config(ctx: &Context, req: SetConfigRequest) -> Result<SetConfigResponse, Status> {
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    let mut values = Vec::new();
    for e in req.entries {
        if !valid_key(&e.key) {
            return Err(Status::invalid_argument(format!("SetConfig: invalid config key {:?}", e.key)));
        }
        if section(&e.key) != "gitlab" {
            return Err(Status::invalid_argument(format!("SetConfig: config key {:?} is not allowed", e.key)));
        }
        let value = match e.value {
            Some(Value::ValueStr(s)) if s.contains(['\n', '\0']) => {
                return Err(Status::invalid_argument(format!("SetConfig: value of {:?} has a newline or NUL", e.key)));
            }
            Some(Value::ValueStr(s)) => s,
            Some(Value::ValueInt32(i)) => i.to_string(),
            Some(Value::ValueBool(b)) => b.to_string(),
            None => return Err(Status::invalid_argument(format!("SetConfig: no value for {:?}", e.key))),
        };
        values.push((e.key, value));
    }
    let config = repo.join("config");
    tokio::task::spawn_blocking(move || write_config(&config, &values))
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
    Ok(SetConfigResponse {})
}

/// Sets `values` in the config file at `path`, read and replaced under `config.lock` as git does.
fn write_config(path: &Path, values: &[(String, String)]) -> Result<(), Status> {
    edit_config(path, "SetConfig", |file| {
        for (key, value) in values {
            file.set_raw_value(key.as_str(), value.as_bytes().as_bstr()).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// Edits a repository's config file in-process under git's `config.lock`, so values (URLs carrying
/// credentials among them) never pass through argv, and a concurrent `git config` waits or fails rather
/// than losing a write. `rpc` prefixes the errors.
pub(crate) fn edit_config(
    path: &Path,
    rpc: &str,
    edit: impl FnOnce(&mut gix::config::File) -> Result<(), String>,
) -> Result<(), Status> {
    let internal = |e: &dyn std::fmt::Display| Status::internal(format!("{rpc}: {e}"));
    let lock_path = path.with_extension("lock");
    let mut lock = match std::fs::OpenOptions::new().write(true).create_new(true).open(&lock_path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Status::failed_precondition(format!("{rpc}: could not lock config file")));
        }
        Err(e) => return Err(internal(&e)),
    };
    let result = (|| {
        let mut file = gix::config::File::from_path_no_includes(path.to_path_buf(), gix::config::Source::Local)
            .map_err(|e| internal(&e))?;
        edit(&mut file).map_err(|e| internal(&e))?;
        let mut out = Vec::new();
        file.write_to(&mut out).map_err(|e| internal(&e))?;
        lock.write_all(&out).map_err(|e| internal(&e))?;
        lock.sync_all().map_err(|e| internal(&e))?;
        std::fs::rename(&lock_path, path).map_err(|e| internal(&e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&lock_path);
    }
    result
}

pub async fn delete_config(ctx: &Context, req: DeleteConfigRequest) -> Result<DeleteConfigResponse, Status> {
    let repo = ctx.locator.repo_path(req.repository.as_ref())?;
    for key in &req.keys {
        if !valid_key(key) {
            return Err(Status::invalid_argument(format!("DeleteConfig: invalid config key {key:?}")));
        }
        if ["core", "extensions", "include", "includeif"].contains(&section(key).as_str()) {
            return Err(Status::invalid_argument(format!("DeleteConfig: config key {key:?} is not allowed")));
        }
    }
    for key in &req.keys {
        // The key is checked above: letters, digits, dots and dashes, never an option.
        let out = ctx.git.command(&repo, Sub::Config).flag("--unset-all").trusted_arg(key).run_to_end().await?;
        // 5: the key is not in the config, which is what was asked.
        if !matches!(out.exit.code, 0 | 5) {
            return Err(Status::internal(format!("command failed: {}", out.stderr_text())));
        }
    }
    Ok(DeleteConfigResponse {})
}
