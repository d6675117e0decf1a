//! Reaching another Gitaly server for a call: the `gitaly-servers` metadata GitLab sends (storage →
//! address and token), a gRPC client to that server, and the environment that makes `git` fetch from it
//! through `rgitaly-ssh`.
//!
//! One module so that the rules are the same for every RPC that crosses servers (CreateFork,
//! FetchSourceBranch, ReplicateRepository, FetchInternalRemote): the addresses come only from the call's
//! metadata, the token travels in git's environment (never argv, never a log line), and git is allowed
//! exactly one transport — ssh through `rgitaly-ssh` — for the internal URL.

use std::collections::HashMap;

use base64::Engine;
use serde::Deserialize;
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::client::{self, AuthChannel};
use crate::proto::gitaly::Repository;

/// The URL git is given for a repository on another Gitaly server; `rgitaly-ssh` ignores the host and
/// path and calls the repository in `GITALY_PAYLOAD`.
pub const INTERNAL_URL: &str = "ssh://gitaly/internal.git";

const METADATA_KEY: &str = "gitaly-servers";

/// One server as GitLab names it.
#[derive(Clone, Deserialize, Default)]
pub struct ServerInfo {
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub token: String,
}

impl std::fmt::Debug for ServerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerInfo").field("address", &self.address).field("token", &"[FILTERED]").finish()
    }
}

/// Every server in the call's `gitaly-servers` metadata.
pub fn servers(md: &MetadataMap) -> Result<HashMap<String, ServerInfo>, String> {
    let encoded = md.get(METADATA_KEY).ok_or("empty gitaly-servers metadata")?;
    let encoded = encoded.to_str().map_err(|_| "gitaly-servers metadata is not ascii")?;
    let json = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| format!("failed decoding base64: {e}"))?;
    serde_json::from_slice(&json).map_err(|e| format!("failed unmarshalling json: {e}"))
}

/// The server holding `storage`, as the metadata says.
pub fn server(md: &MetadataMap, storage: &str) -> Result<ServerInfo, String> {
    let mut all = servers(md)?;
    let info = all.remove(storage).ok_or("storage name not found")?;
    if info.address.is_empty() {
        return Err("empty gitaly address".into());
    }
    Ok(info)
}

/// The metadata value naming one server, as a caller sends it.
pub fn encode(storage: &str, info: &ServerInfo) -> String {
    let json = serde_json::json!({ storage: { "address": info.address, "token": info.token } });
    base64::engine::general_purpose::STANDARD.encode(json.to_string())
}

/// A client channel to the server holding `storage`.
pub async fn connect(md: &MetadataMap, storage: &str) -> Result<AuthChannel, Status> {
    let info = server(md, storage).map_err(Status::invalid_argument)?;
    client::connect(&info.address, Some(&info.token)).await.map_err(|e| Status::unavailable(e.to_string()))
}

/// Copies the call's `gitaly-servers` metadata onto a request to another server, so that it can in turn
/// reach the servers this call names.
pub fn forward<T>(md: &MetadataMap, mut req: tonic::Request<T>) -> tonic::Request<T> {
    if let Some(v) = md.get(METADATA_KEY) {
        req.metadata_mut().insert(METADATA_KEY, v.clone());
    }
    req
}

/// How git reaches `repository` on the server holding its storage: the variables `rgitaly-ssh` reads,
/// for an `upload-pack` of that repository.
#[derive(Clone)]
pub struct UploadPackEnv {
    pub vars: Vec<(String, String)>,
}

impl std::fmt::Debug for UploadPackEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UploadPackEnv")
    }
}

/// The environment for git to fetch `repository` from the server the call's metadata names for its
/// storage (the ssh command itself is added by [`crate::git::GitCommand::internal_remote`]).
/// `InvalidArgument` when the metadata does not name it, as upstream.
pub fn upload_pack_env(md: &MetadataMap, repository: &Repository) -> Result<UploadPackEnv, Status> {
    let all = servers(md).map_err(|e| Status::internal(format!("commandEnv: extracting Gitaly servers: {e}")))?;
    let info = all.get(&repository.storage_name).ok_or_else(|| {
        Status::invalid_argument(format!("commandEnv: no storage info for {}", repository.storage_name))
    })?;
    if info.address.is_empty() {
        return Err(Status::invalid_argument("commandEnv: empty gitaly address"));
    }
    let payload = serde_json::json!({
        "repository": {
            "storage_name": repository.storage_name,
            "relative_path": repository.relative_path,
            "git_object_directory": repository.git_object_directory,
            "git_alternate_object_directories": repository.git_alternate_object_directories,
            "gl_repository": repository.gl_repository,
            "gl_project_path": repository.gl_project_path,
        }
    });
    let mut vars = vec![
        ("GITALY_PAYLOAD".to_string(), payload.to_string()),
        ("GIT_SSH_VARIANT".to_string(), "simple".to_string()),
        ("GITALY_ADDRESS".to_string(), info.address.clone()),
        ("GITALY_TOKEN".to_string(), info.token.clone()),
    ];
    for key in ["SSL_CERT_FILE", "SSL_CERT_DIR"] {
        if let Ok(v) = std::env::var(key) {
            vars.push((key.to_string(), v));
        }
    }
    Ok(UploadPackEnv { vars })
}

/// `GIT_SSH_COMMAND` for an upload-pack through `ssh_binary`, quoted for the shell git runs it with.
pub fn ssh_command(ssh_binary: &std::path::Path) -> String {
    format!("'{}' upload-pack", ssh_binary.to_string_lossy().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(value: &str) -> MetadataMap {
        let mut md = MetadataMap::new();
        md.insert(METADATA_KEY, value.parse().unwrap());
        md
    }

    #[test]
    fn reads_what_gitlab_sends() {
        let info = ServerInfo { address: "unix:/tmp/g.sock".into(), token: "secret".into() };
        let md = md(&encode("other", &info));
        let got = server(&md, "other").unwrap();
        assert_eq!((got.address.as_str(), got.token.as_str()), ("unix:/tmp/g.sock", "secret"));
        assert_eq!(server(&md, "nope").unwrap_err(), "storage name not found");
        assert!(format!("{got:?}").contains("[FILTERED]") && !format!("{got:?}").contains("secret"));
    }

    #[test]
    fn refuses_what_is_not_metadata() {
        assert_eq!(servers(&MetadataMap::new()).unwrap_err(), "empty gitaly-servers metadata");
        assert!(servers(&md("!!!")).unwrap_err().starts_with("failed decoding base64"));
        let not_json = base64::engine::general_purpose::STANDARD.encode("[1,2]");
        assert!(servers(&md(&not_json)).unwrap_err().starts_with("failed unmarshalling json"));
        let empty = encode("s", &ServerInfo::default());
        assert_eq!(server(&md(&empty), "s").unwrap_err(), "empty gitaly address");
    }

    #[test]
    fn git_gets_the_repository_and_the_token_in_its_environment() {
        let info = ServerInfo { address: "tcp://h:1".into(), token: "t".into() };
        let repo = Repository { storage_name: "s".into(), relative_path: "a b.git".into(), ..Default::default() };
        let env = upload_pack_env(&md(&encode("s", &info)), &repo).unwrap();
        let get = |k: &str| env.vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(
            ssh_command(std::path::Path::new("/opt/it's/rgitaly-ssh")),
            r"'/opt/it'\''s/rgitaly-ssh' upload-pack"
        );
        assert_eq!(get("GITALY_TOKEN"), "t");
        let payload = crate::ssh_client::parse_payload(&get("GITALY_PAYLOAD")).unwrap();
        assert_eq!(payload.repository.unwrap().relative_path, "a b.git");
        let other = Repository { storage_name: "x".into(), ..repo };
        assert_eq!(upload_pack_env(&md(&encode("s", &info)), &other).unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
