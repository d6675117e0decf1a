//! Ref updates of write RPCs through the hook chain, as upstream's `updateReferenceWithHooks`: pre-receive,
//! update, the compare-and-swap update itself, post-receive. All four run in the daemon (HookService and
//! RefUpdateService on its internal socket): the worker only holds the payload the daemon signed for this
//! call's repository and user, so it cannot act for anything else, and the swap finishes (its lock file
//! gone) even if this worker is killed during it.

use rgitaly::git::repo::{Repo, UpdateRefError};
use rgitaly::hook::payload::{hooks, Payload, ENV};
use rgitaly::proto::gitaly::hook_service_client::HookServiceClient;
use rgitaly::proto::gitaly::*;
use rgitaly::proto::rgitaly::ref_update_service_client::RefUpdateServiceClient;
use rgitaly::proto::rgitaly::UpdateReferenceRequest;
use tonic::Status;

/// Why an update with hooks did not happen.
#[derive(Debug)]
pub enum UpdateError {
    /// A hook refused: the message for `pre_receive_error`.
    PreReceive(String),
    /// The compare-and-swap failed (the ref moved meanwhile).
    UpdateRef(UpdateRefError),
    Other(Status),
}

impl std::fmt::Display for UpdateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpdateError::PreReceive(m) => f.write_str(m),
            UpdateError::UpdateRef(e) => write!(f, "{e}"),
            UpdateError::Other(s) => f.write_str(s.message()),
        }
    }
}

/// The channel to the daemon's internal socket, connected once per socket and token and shared by this
/// worker's writes (a connection per write cost each of them an HTTP/2 handshake).
async fn hook_channel(socket: &str, token: &str) -> Result<rgitaly::client::AuthChannel, String> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CHANNELS: OnceLock<Mutex<HashMap<(String, String), rgitaly::client::AuthChannel>>> = OnceLock::new();
    let channels = CHANNELS.get_or_init(Default::default);
    let key = (socket.to_string(), token.to_string());
    if let Some(c) = channels.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(c.clone());
    }
    let channel = rgitaly::client::connect(&format!("unix:{socket}"), Some(token)).await.map_err(|e| e.to_string())?;
    let mut map = channels.lock().unwrap_or_else(|e| e.into_inner());
    // A daemon has one internal socket; an upgraded daemon's replaces the old one.
    map.retain(|(s, _), _| s == socket);
    Ok(map.entry(key).or_insert(channel).clone())
}

/// Output and exit status of one hook.
struct Ran {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    code: i32,
}

impl Ran {
    /// Upstream's message for a refusal: stderr if it says anything, else stdout.
    fn message(&self) -> String {
        let stderr = String::from_utf8_lossy(&self.stderr);
        if !stderr.trim().is_empty() {
            return stderr.into_owned();
        }
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

macro_rules! collect {
    ($stream:expr) => {{
        let mut s = $stream;
        let mut ran = Ran { stdout: Vec::new(), stderr: Vec::new(), code: 1 };
        while let Some(m) =
            s.message().await.map_err(|e| UpdateError::Other(Status::internal(e.message().to_string())))?
        {
            ran.stdout.extend_from_slice(&m.stdout);
            ran.stderr.extend_from_slice(&m.stderr);
            if let Some(e) = m.exit_status {
                ran.code = e.value;
            }
        }
        ran
    }};
}

/// The post-receive hook of a ref update that has happened, to run when the caller is ready (after it
/// let go of a lock the next write waits for).
pub struct PostReceive {
    client: HookServiceClient<rgitaly::client::AuthChannel>,
    request: PostReceiveHookRequest,
}

impl PostReceive {
    pub async fn run(mut self) -> Result<(), UpdateError> {
        let call_err = |e: Status| UpdateError::Other(Status::internal(format!("hooks: {}", e.message())));
        let stream = self.client.post_receive_hook(futures::stream::iter([self.request])).await.map_err(call_err)?;
        let ran = collect!(stream.into_inner());
        if ran.code != 0 {
            // Upstream reports it as a refusal too, though the ref has moved.
            return Err(UpdateError::PreReceive(ran.message()));
        }
        Ok(())
    }
}

/// Where the swap after the hooks moves the ref, as the caller's `ready` says once its objects are synced.
pub enum Swap {
    /// From the change's old value to its new one.
    AsPlanned,
    /// From the change's old value to a later commit built on its new one (writes that passed their hooks
    /// too, landed by this one swap).
    To(String),
    /// Nowhere: a swap made for an earlier change has landed this one too.
    Done,
    /// Nowhere: the change was built on one that did not land, so its old value will never be the ref's.
    /// It is answered as a lost compare-and-swap without taking the ref's lock, which a swap that can
    /// land may be waiting for.
    Stale,
}

impl Swap {
    /// The value the ref moves to, for a change to `new`; None when it need not move.
    fn target(self, reference: &str, new: &str) -> Result<Option<String>, UpdateError> {
        match self {
            Swap::AsPlanned => Ok(Some(new.to_string())),
            Swap::To(later) => Ok(Some(later)),
            Swap::Done => Ok(None),
            Swap::Stale => Err(UpdateError::UpdateRef(UpdateRefError {
                reference: reference.to_string(),
                stderr: "the change it was built on did not land".into(),
            })),
        }
    }
}

/// Moves `reference` from `old` to `new` (zero ids for creation and deletion) after the pre-receive and
/// update hooks allowed it, and returns its post-receive for the caller to run (None when the payload asks
/// for no hooks). `payload` is the daemon's, from the call's metadata; `push_options` go to pre-receive and
/// post-receive (UserRebaseConfirmable's). `ready` ends when the new objects are synced, saying where to
/// swap the ref: the hooks run meanwhile, the ref moves only after.
pub async fn update_with_hooks(
    payload: Option<&str>,
    repo: &Repo<'_>,
    reference: &str,
    (new, old): (&str, &str),
    push_options: &[String],
    ready: impl std::future::Future<Output = Result<Swap, Status>>,
) -> Result<Option<PostReceive>, UpdateError> {
    let internal = |e: String| UpdateError::Other(Status::internal(e));
    // A name git would refuse never reaches the hooks: a line break in it would forge change lines.
    if reference.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(UpdateError::UpdateRef(rgitaly::git::repo::UpdateRefError {
            reference: reference.to_string(),
            stderr: "invalid ref name".into(),
        }));
    }
    let value = payload.ok_or_else(|| internal("no hooks payload from the rgitaly daemon".into()))?;
    let p = Payload::decode(value).map_err(|e| internal(e.to_string()))?;
    // As rgitaly-hooks does, only the hooks the daemon asked for (it asks for all three on a write).
    if p.requested_hooks & (hooks::PRE_RECEIVE | hooks::UPDATE | hooks::POST_RECEIVE) == 0 {
        let Some(to) = ready.await.map_err(UpdateError::Other)?.target(reference, new)? else { return Ok(None) };
        return repo.update_ref(reference, &to, Some(old)).await.map(|()| None).map_err(UpdateError::UpdateRef);
    }
    let repository = Some(p.repo().map_err(|e| internal(e.to_string()))?);
    let env = vec![format!("{ENV}={value}")];
    let channel = hook_channel(&p.internal_socket, &p.internal_socket_token)
        .await
        .map_err(|e| internal(format!("hooks: {e}")))?;
    let mut client = HookServiceClient::new(channel.clone());
    let call_err = |e: Status| internal(format!("hooks: {}", e.message()));
    let changes = format!("{old} {new} {reference}\n").into_bytes();

    let pre = PreReceiveHookRequest {
        repository: repository.clone(),
        environment_variables: env.clone(),
        stdin: changes.clone(),
        git_push_options: push_options.to_vec(),
    };
    let ran = collect!(client.pre_receive_hook(futures::stream::iter([pre])).await.map_err(call_err)?.into_inner());
    if ran.code != 0 {
        return Err(UpdateError::PreReceive(ran.message()));
    }
    let update = UpdateHookRequest {
        repository: repository.clone(),
        environment_variables: env.clone(),
        r#ref: reference.as_bytes().to_vec(),
        old_value: old.to_string(),
        new_value: new.to_string(),
    };
    let ran = collect!(client.update_hook(update).await.map_err(call_err)?.into_inner());
    if ran.code != 0 {
        return Err(UpdateError::PreReceive(ran.message()));
    }
    if let Some(to) = ready.await.map_err(UpdateError::Other)?.target(reference, new)? {
        let update = UpdateReferenceRequest {
            repository: repository.clone(),
            environment_variables: env.clone(),
            reference: reference.as_bytes().to_vec(),
            new_value: to,
            old_value: old.to_string(),
        };
        // Made by the daemon: a worker killed holding the ref's lock would leave it behind (`pool::fence`).
        match RefUpdateServiceClient::new(channel).update_reference(update).await {
            Ok(_) => {}
            Err(e) if e.code() == tonic::Code::FailedPrecondition => {
                return Err(UpdateError::UpdateRef(UpdateRefError {
                    reference: reference.to_string(),
                    stderr: e.message().to_string(),
                }))
            }
            Err(e) => return Err(internal(format!("update {reference}: {}", e.message()))),
        }
    }
    let request = PostReceiveHookRequest {
        repository,
        environment_variables: env,
        stdin: changes,
        git_push_options: push_options.to_vec(),
    };
    Ok(Some(PostReceive { client, request }))
}
