//! The hooks payload: what a git process started for a write carries in `GITALY_HOOKS_PAYLOAD` so that
//! `rgitaly-hooks` (run by git as a hook) can call back the daemon for the right repository and user.
//!
//! The layout is upstream's (base64 of JSON, the repository as a protobuf-JSON string), so logs and tools
//! read the same. What upstream does not have: a MAC over the whole payload with a key that never leaves
//! the daemon. A process that reads a payload learns the internal socket and its token, but it cannot
//! make the daemon act for another repository, another user or a hook the payload does not ask for, so a
//! payload forged in some process's environment gets nowhere. What the MAC does not stop: replaying a
//! payload as it is (for its own repository and user) for as long as the daemon that signed it runs —
//! its hooks, or (RefUpdateService, what workers use) a ref update of that repository, which a process of
//! the daemon's user could make in the files anyway.

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

use crate::proto::gitaly::Repository;

pub const ENV: &str = "GITALY_HOOKS_PAYLOAD";

/// Which hooks a payload asks for (upstream's bits).
pub mod hooks {
    pub const REFERENCE_TRANSACTION: u32 = 1;
    pub const UPDATE: u32 = 2;
    pub const PRE_RECEIVE: u32 = 4;
    pub const POST_RECEIVE: u32 = 8;
    pub const PACK_OBJECTS: u32 = 16;
    /// What receive-pack and every write runs.
    pub const RECEIVE_PACK: u32 = REFERENCE_TRANSACTION | UPDATE | PRE_RECEIVE | POST_RECEIVE;
}

/// The user a write is made for, from the RPC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub userid: String,
    /// "ssh", "http" or "web", as upstream.
    #[serde(default)]
    pub protocol: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub requested_hooks: u32,
    #[serde(default)]
    pub binary_directory: String,
    #[serde(default)]
    pub git_path: String,
    pub internal_socket: String,
    pub internal_socket_token: String,
    /// Praefect transactions are not part of rgitaly; always null.
    #[serde(default)]
    pub transaction: Option<serde_json::Value>,
    #[serde(default)]
    pub praefect: Option<serde_json::Value>,
    pub receive_hooks_payload: Option<User>,
    /// The repository as protobuf JSON, as upstream writes it.
    pub repository: String,
    /// HMAC-SHA256 over the payload with this field empty, hex; checked by the daemon only.
    #[serde(default)]
    pub rgitaly_mac: String,
}

/// The repository fields as protobuf JSON names them.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RepoJson {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    storage_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    relative_path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    git_object_directory: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    git_alternate_object_directories: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    gl_repository: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    gl_project_path: String,
}

pub fn repository_json(r: &Repository) -> String {
    serde_json::to_string(&RepoJson {
        storage_name: r.storage_name.clone(),
        relative_path: r.relative_path.clone(),
        git_object_directory: r.git_object_directory.clone(),
        git_alternate_object_directories: r.git_alternate_object_directories.clone(),
        gl_repository: r.gl_repository.clone(),
        gl_project_path: r.gl_project_path.clone(),
    })
    .expect("plain json")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("no {ENV} in the hook's environment")]
    Missing,
    #[error("invalid hooks payload: {0}")]
    Invalid(String),
    #[error("hooks payload not signed by this daemon")]
    Forged,
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn mac(key: &[u8], p: &Payload) -> HmacSha256 {
    let mut unsigned = p.clone();
    unsigned.rgitaly_mac.clear();
    let mut m = HmacSha256::new_from_slice(key).expect("hmac accepts any key length");
    m.update(&serde_json::to_vec(&unsigned).expect("plain json"));
    m
}

impl Payload {
    /// The env value, signed with `key`.
    pub fn encode(mut self, key: &[u8]) -> String {
        self.rgitaly_mac = hex::encode(mac(key, &self).finalize().into_bytes());
        base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&self).expect("plain json"))
    }

    fn parse(value: &str) -> Result<Payload, PayloadError> {
        let json = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|e| PayloadError::Invalid(e.to_string()))?;
        serde_json::from_slice(&json).map_err(|e| PayloadError::Invalid(e.to_string()))
    }

    fn normalized(mut self) -> Payload {
        // Upstream: none requested means all.
        if self.requested_hooks == 0 {
            self.requested_hooks = hooks::RECEIVE_PACK | hooks::PACK_OBJECTS;
        }
        self
    }

    /// Reads a payload without checking its MAC (what `rgitaly-hooks` does; it has no key).
    pub fn decode(value: &str) -> Result<Payload, PayloadError> {
        Ok(Payload::parse(value)?.normalized())
    }

    /// Reads a payload and checks that this daemon signed it (constant-time).
    pub fn verify(value: &str, key: &[u8]) -> Result<Payload, PayloadError> {
        let p = Payload::parse(value)?;
        let given = hex::decode(&p.rgitaly_mac).map_err(|_| PayloadError::Forged)?;
        mac(key, &p).verify_slice(&given).map_err(|_| PayloadError::Forged)?;
        Ok(p.normalized())
    }

    /// The payload from a hook's environment (`KEY=VALUE` strings), checked.
    pub fn from_env(env: &[String], key: &[u8]) -> Result<Payload, PayloadError> {
        let prefix = format!("{ENV}=");
        let value = env.iter().rev().find_map(|e| e.strip_prefix(&prefix)).ok_or(PayloadError::Missing)?;
        Payload::verify(value, key)
    }

    /// The repository the payload was made for.
    pub fn repo(&self) -> Result<Repository, PayloadError> {
        let r: RepoJson =
            serde_json::from_str(&self.repository).map_err(|e| PayloadError::Invalid(format!("repository: {e}")))?;
        Ok(Repository {
            storage_name: r.storage_name,
            relative_path: r.relative_path,
            git_object_directory: r.git_object_directory,
            git_alternate_object_directories: r.git_alternate_object_directories,
            gl_repository: r.gl_repository,
            gl_project_path: r.gl_project_path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Payload {
        Payload {
            requested_hooks: hooks::RECEIVE_PACK,
            internal_socket: "/run/rgitaly/internal.sock".into(),
            internal_socket_token: "t".into(),
            receive_hooks_payload: Some(User {
                username: "jane".into(),
                userid: "user-1".into(),
                protocol: "ssh".into(),
            }),
            repository: repository_json(&Repository {
                storage_name: "default".into(),
                relative_path: "a.git".into(),
                gl_repository: "project-1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_and_upstream_names() {
        let v = sample().encode(b"key");
        let json = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(&v).unwrap()).unwrap();
        assert!(json.contains(r#""receive_hooks_payload":{"username":"jane","userid":"user-1","protocol":"ssh"}"#));
        assert!(json.contains(
            r#""repository":"{\"storageName\":\"default\",\"relativePath\":\"a.git\",\"glRepository\":\"project-1\"}""#
        ));
        assert!(json.contains(r#""transaction":null"#));
        let p = Payload::verify(&v, b"key").unwrap();
        assert_eq!(p.repo().unwrap().relative_path, "a.git");
        assert_eq!(Payload::from_env(&[format!("{ENV}={v}")], b"key").unwrap().internal_socket_token, "t");
    }

    #[test]
    fn forged_or_altered_payloads_are_refused() {
        let v = sample().encode(b"key");
        assert_eq!(Payload::verify(&v, b"other key"), Err(PayloadError::Forged));
        // The same payload for another repository, re-encoded by someone without the key.
        let mut p = Payload::decode(&v).unwrap();
        p.repository = repository_json(&Repository {
            storage_name: "default".into(),
            relative_path: "victim.git".into(),
            ..Default::default()
        });
        let forged = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&p).unwrap());
        assert_eq!(Payload::verify(&forged, b"key"), Err(PayloadError::Forged));
        // A user's hooks dropped from the request, or no MAC at all.
        let mut p = Payload::decode(&v).unwrap();
        p.requested_hooks = hooks::POST_RECEIVE;
        let forged = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&p).unwrap());
        assert_eq!(Payload::verify(&forged, b"key"), Err(PayloadError::Forged));
        p.rgitaly_mac.clear();
        let forged = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&p).unwrap());
        assert_eq!(Payload::verify(&forged, b"key"), Err(PayloadError::Forged));
        assert_eq!(Payload::from_env(&[], b"key"), Err(PayloadError::Missing));
        assert!(matches!(Payload::verify("not base64!", b"key"), Err(PayloadError::Invalid(_))));
    }
}
