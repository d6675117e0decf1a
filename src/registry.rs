//! What each RPC is: service, method, streaming kinds, operation type, scope and where its repositories and
//! storage sit in the request. The table is generated at build time from the protos' `lint.proto`
//! annotations (`build.rs`), as upstream's Praefect reads them, so no layer keeps a list of its own: the
//! call layer looks a method up once and every layer after it reads the entry from the request.
//!
//! Health and reflection are not Gitaly protos; their entries come from the descriptor sets their crates
//! ship, with no operation type.

use std::sync::LazyLock;

use prost::Message;

use crate::proto::gitaly::Repository;

/// `gitaly.OperationMsg.Operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Not annotated (health, reflection, our admin API, intercepted services).
    Unknown,
    /// Changes a repository: never repeated blindly.
    Mutator,
    /// Only reads: safe to retry.
    Accessor,
}

/// `gitaly.OperationMsg.Scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Repository,
    Storage,
}

/// One RPC. Field paths are protobuf field numbers from the request message down to the field.
#[derive(Debug)]
pub struct Method {
    /// `/gitaly.CommitService/FindCommit`.
    pub full: &'static str,
    /// `gitaly.CommitService`.
    pub service: &'static str,
    /// `FindCommit`.
    pub name: &'static str,
    /// The request message's full name.
    pub request: &'static str,
    pub client_streaming: bool,
    pub server_streaming: bool,
    pub op: Op,
    /// `None` where the RPC carries no annotation.
    pub scope: Option<Scope>,
    pub target_repository: Option<&'static [u32]>,
    pub additional_repository: Option<&'static [u32]>,
    pub storage: Option<&'static [u32]>,
    /// Where the request names the user a write is made for (a `gitaly.User` field), for the hooks.
    pub user: Option<&'static [u32]>,
}

include!(concat!(env!("OUT_DIR"), "/registry.rs"));

/// The label used for anything not in the registry: a client-chosen path never becomes a label.
pub const UNKNOWN: &str = "unknown";

impl Method {
    /// grpc-prometheus' `grpc_type` label.
    pub fn grpc_type(&self) -> &'static str {
        match (self.client_streaming, self.server_streaming) {
            (false, false) => "unary",
            (true, false) => "client_stream",
            (false, true) => "server_stream",
            (true, true) => "bidi_stream",
        }
    }

    /// The target repository in a request message, decoded as the handler will decode it; `Ok(None)` when
    /// the method has none or the message does not set it, an error when the message does not decode.
    pub fn target_repository_in(&self, msg: &[u8]) -> Result<Option<Repository>, String> {
        self.target_repository.map_or(Ok(None), |p| repository_at(msg, p))
    }

    /// The user a write is made for, as [`Method::target_repository_in`].
    pub fn user_in(&self, msg: &[u8]) -> Result<Option<crate::proto::gitaly::User>, String> {
        use prost::Message;
        match self.user.map(|p| message_at(msg, p)).transpose()?.flatten() {
            Some(bytes) => crate::proto::gitaly::User::decode(bytes.as_slice()).map(Some).map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    /// The additional repository (an object pool's origin), as [`Method::target_repository_in`].
    pub fn additional_repository_in(&self, msg: &[u8]) -> Result<Option<Repository>, String> {
        self.additional_repository.map_or(Ok(None), |p| repository_at(msg, p))
    }
}

/// The method for a request path, `None` when no service here declares it.
pub fn lookup(path: &str) -> Option<&'static Method> {
    match METHODS.binary_search_by(|m| m.full.cmp(path)) {
        Ok(i) => Some(&METHODS[i]),
        Err(_) => EXTERNAL.iter().find(|m| m.full == path),
    }
}

/// Every method the daemon's services declare: ours, then health and reflection.
pub fn all() -> impl Iterator<Item = &'static Method> {
    METHODS.iter().chain(EXTERNAL.iter())
}

/// The services, each once, in table order.
pub fn services() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for m in all() {
        if !out.contains(&m.service) {
            out.push(m.service);
        }
    }
    out
}

/// Health and reflection, from the descriptor sets their crates ship (read once).
static EXTERNAL: LazyLock<Vec<Method>> = LazyLock::new(|| {
    let mut out = Vec::new();
    for set in [
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ] {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else { continue };
        for f in set.file {
            for s in &f.service {
                let service: &'static str = Box::leak(format!("{}.{}", f.package(), s.name()).into_boxed_str());
                for m in &s.method {
                    out.push(Method {
                        full: Box::leak(format!("/{service}/{}", m.name()).into_boxed_str()),
                        service,
                        name: Box::leak(m.name().to_string().into_boxed_str()),
                        request: Box::leak(m.input_type().trim_start_matches('.').to_string().into_boxed_str()),
                        client_streaming: m.client_streaming(),
                        server_streaming: m.server_streaming(),
                        op: Op::Unknown,
                        scope: None,
                        target_repository: None,
                        additional_repository: None,
                        storage: None,
                        user: None,
                    });
                }
            }
        }
    }
    out
});

/// The message at `path` in an encoded message. Every occurrence of a field is merged, as protobuf
/// decoding merges repeated occurrences of a message field, so this sees what the handler will see.
fn message_at(msg: &[u8], path: &[u32]) -> Result<Option<Vec<u8>>, String> {
    let mut current = msg.to_vec();
    for &number in path {
        match field_bytes(&current, number)? {
            Some(next) => current = next,
            None => return Ok(None),
        }
    }
    Ok(Some(current))
}

/// The concatenated payloads of every length-delimited occurrence of field `number`.
fn field_bytes(mut buf: &[u8], number: u32) -> Result<Option<Vec<u8>>, String> {
    use prost::encoding::{decode_varint, WireType};
    let bad = |what: &str| what.to_string();
    let mut out: Option<Vec<u8>> = None;
    while !buf.is_empty() {
        let key = decode_varint(&mut buf).map_err(|e| e.to_string())?;
        let field = (key >> 3) as u32;
        let wire = WireType::try_from(key & 7).map_err(|_| bad("invalid wire type"))?;
        let len = match wire {
            WireType::Varint => {
                decode_varint(&mut buf).map_err(|e| e.to_string())?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => {
                usize::try_from(decode_varint(&mut buf).map_err(|e| e.to_string())?).map_err(|_| bad("length"))?
            }
            WireType::StartGroup | WireType::EndGroup => return Err(bad("groups are not supported")),
        };
        if len > buf.len() {
            return Err(bad("buffer underflow"));
        }
        if field == number && wire == WireType::LengthDelimited {
            out.get_or_insert_with(Vec::new).extend_from_slice(&buf[..len]);
        }
        buf = &buf[len..];
    }
    Ok(out)
}

fn repository_at(msg: &[u8], path: &[u32]) -> Result<Option<Repository>, String> {
    message_at(msg, path)?.map(|m| Repository::decode(m.as_slice()).map_err(|e| e.to_string())).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::gitaly::{FindCommitRequest, UserCommitFilesRequest, UserCommitFilesRequestHeader};

    fn repo(path: &str) -> Repository {
        Repository { storage_name: "default".into(), relative_path: path.into(), ..Default::default() }
    }

    #[test]
    fn table_is_sorted_and_complete() {
        assert!(METHODS.windows(2).all(|w| w[0].full < w[1].full));
        let find = lookup("/gitaly.CommitService/FindCommit").unwrap();
        assert_eq!(
            (find.op, find.scope, find.target_repository),
            (Op::Accessor, Some(Scope::Repository), Some(&[1u32][..]))
        );
        assert_eq!(find.grpc_type(), "unary");
        let commit = lookup("/gitaly.OperationService/UserCommitFiles").unwrap();
        assert_eq!(commit.op, Op::Mutator);
        assert!(commit.client_streaming && !commit.server_streaming);
        assert_eq!(commit.target_repository, Some(&[1u32, 1][..]));
        // Upstream v13.12 leaves start_repository unannotated.
        assert_eq!(commit.additional_repository, None);
        assert!(lookup("/grpc.health.v1.Health/Check").is_some());
        assert!(lookup("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo").is_some());
        assert!(lookup("/gitaly.CommitService/NoSuchMethod").is_none());
        assert!(lookup("/x").is_none());
        // Every repository-scoped gitaly method says where its repository is.
        for m in METHODS.iter().filter(|m| m.scope == Some(Scope::Repository)) {
            assert!(m.target_repository.is_some(), "{}", m.full);
        }
    }

    #[test]
    fn repositories_decode_as_the_handler_decodes_them() {
        let find = lookup("/gitaly.CommitService/FindCommit").unwrap();
        let msg = FindCommitRequest { repository: Some(repo("a.git")), revision: b"HEAD".to_vec(), trailers: false };
        assert_eq!(find.target_repository_in(&msg.encode_to_vec()).unwrap(), Some(repo("a.git")));
        // A second occurrence merges into the first, as prost merges it.
        let mut twice = msg.encode_to_vec();
        twice.extend(FindCommitRequest { repository: Some(repo("b.git")), ..Default::default() }.encode_to_vec());
        assert_eq!(
            find.target_repository_in(&twice).unwrap(),
            FindCommitRequest::decode(twice.as_slice()).unwrap().repository
        );
        assert_eq!(find.target_repository_in(&twice).unwrap().unwrap().relative_path, "b.git");

        let commit = lookup("/gitaly.OperationService/UserCommitFiles").unwrap();
        let header = UserCommitFilesRequest {
            user_commit_files_request_payload: Some(
                crate::proto::gitaly::user_commit_files_request::UserCommitFilesRequestPayload::Header(
                    UserCommitFilesRequestHeader {
                        repository: Some(repo("t.git")),
                        start_repository: Some(repo("s.git")),
                        ..Default::default()
                    },
                ),
            ),
        }
        .encode_to_vec();
        assert_eq!(commit.target_repository_in(&header).unwrap(), Some(repo("t.git")));
        assert!(find.target_repository_in(&[0x0a, 0x7f, 0x12]).is_err());
        assert_eq!(find.target_repository_in(&[]).unwrap(), None);
    }
}
