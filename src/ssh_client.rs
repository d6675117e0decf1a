//! `rgitaly-ssh`: lets a plain `git` talk to the daemon's SSHService as if it were an ssh server.
//!
//! Two ways in. Upstream-compatible (`GIT_SSH_COMMAND="rgitaly-ssh upload-pack"` with `GITALY_PAYLOAD`
//! holding the JSON request) for GitLab's own use, and a plain mode for people
//! (`GIT_SSH_COMMAND=rgitaly-ssh git clone ssh://rgitaly/<storage>/<path>`) that takes the service and
//! repository from the command git asks the "remote" to run. It answers `-G` as OpenSSH does so git
//! treats it as OpenSSH and passes `GIT_PROTOCOL` (protocol v2).

use std::os::fd::AsFd;

use futures::StreamExt;
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::client;
use crate::proto::gitaly::{
    Repository, SshReceivePackRequest, SshReceivePackResponse, SshUploadArchiveRequest, SshUploadArchiveResponse,
    SshUploadPackRequest, SshUploadPackResponse,
};

/// Largest message accepted from the server (its answers carry up to 128 KiB of output each).
const MAX_RESPONSE: usize = 8 * 1024 * 1024;

/// Which SSHService RPC to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    UploadPack,
    ReceivePack,
    UploadArchive,
}

impl Service {
    pub fn from_command(name: &str) -> Option<Service> {
        match name.trim_start_matches("git-").trim_start_matches("git ") {
            "upload-pack" => Some(Service::UploadPack),
            "receive-pack" => Some(Service::ReceivePack),
            "upload-archive" => Some(Service::UploadArchive),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Service::UploadPack => "upload-pack",
            Service::ReceivePack => "receive-pack",
            Service::UploadArchive => "upload-archive",
        }
    }
}

/// The fields of the first request, common to the three RPCs.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Payload {
    pub repository: Option<Repository>,
    pub git_config_options: Vec<String>,
    pub git_protocol: String,
    pub gl_id: String,
    pub gl_repository: String,
    pub gl_username: String,
}

/// What to do, decided from argv and the environment.
#[derive(Debug, PartialEq)]
pub enum Invocation {
    /// `-G`: git probing for OpenSSH; succeed quietly.
    ProbeVariant,
    Call {
        service: Service,
        payload: Box<Payload>,
    },
}

/// Why `rgitaly-ssh` cannot start; printed as one line.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UsageError {
    #[error("invalid number of arguments: expected a service or an ssh-style host and command")]
    NoCommand,
    #[error("invalid pack command: {0:?}")]
    BadCommand(String),
    #[error("GITALY_PAYLOAD: json unmarshal: {0}")]
    Payload(String),
    #[error("invalid repository path {0:?}: expected /<storage>/<relative path>")]
    BadPath(String),
}

/// OpenSSH options that take a value; git passes some of them (`-p`, `-o`).
const SSH_OPTS_WITH_VALUE: &str = "BbcDEeFIiJLlmOoPpQRSWw";

/// Decides the invocation from `args` (without argv[0]) and an environment lookup.
pub fn parse(args: &[String], env: impl Fn(&str) -> Option<String>) -> Result<Invocation, UsageError> {
    if args.iter().any(|a| a == "-G") {
        return Ok(Invocation::ProbeVariant);
    }
    let first = args.first().ok_or(UsageError::NoCommand)?;
    if let Some(service) = Service::from_command(first).filter(|_| !first.starts_with("git")) {
        // Upstream-compatible: the request comes whole in GITALY_PAYLOAD; the rest of argv is ignored.
        let mut payload = parse_payload(&env("GITALY_PAYLOAD").unwrap_or_default())?;
        if payload.git_protocol.is_empty() {
            payload.git_protocol = env("GIT_PROTOCOL").unwrap_or_default();
        }
        if service == Service::UploadPack {
            // As gitaly-ssh: internal fetches see every ref, whatever transfer.hideRefs the server has.
            payload.git_config_options.insert(0, "transfer.hideRefs=!refs".to_string());
        }
        return Ok(Invocation::Call { service, payload: Box::new(payload) });
    }

    // Plain mode: [ssh options] host command...
    let mut i = 0;
    while i < args.len() && args[i].starts_with('-') {
        let opt = &args[i];
        let takes_value = opt.len() == 2 && SSH_OPTS_WITH_VALUE.contains(&opt[1..]);
        i += if takes_value { 2 } else { 1 };
    }
    let rest = args.get(i + 1..).filter(|r| !r.is_empty()).ok_or(UsageError::NoCommand)?;
    let command = rest.join(" ");
    let (verb, path) = split_command(&command).ok_or_else(|| UsageError::BadCommand(command.clone()))?;
    let service = Service::from_command(verb).ok_or_else(|| UsageError::BadCommand(verb.to_string()))?;
    let trimmed = path.trim_start_matches('/');
    let (storage, relative) = trimmed.split_once('/').ok_or_else(|| UsageError::BadPath(path.clone()))?;
    if storage.is_empty() || relative.is_empty() {
        return Err(UsageError::BadPath(path));
    }
    let uid = unsafe { libc::getuid() };
    let payload = Payload {
        repository: Some(Repository {
            storage_name: storage.to_string(),
            relative_path: relative.to_string(),
            ..Default::default()
        }),
        git_protocol: env("GIT_PROTOCOL").unwrap_or_default(),
        gl_id: env("GL_ID").unwrap_or_else(|| format!("user-{uid}")),
        gl_repository: env("GL_REPOSITORY").unwrap_or_default(),
        gl_username: env("GL_USERNAME").or_else(|| env("USER")).unwrap_or_default(),
        ..Default::default()
    };
    Ok(Invocation::Call { service, payload: Box::new(payload) })
}

/// Splits `git-upload-pack '/a/b.git'` into the verb and the unquoted path.
fn split_command(command: &str) -> Option<(&str, String)> {
    let command = command.trim();
    let (verb, arg) = if let Some(rest) = command.strip_prefix("git ") {
        let (v, a) = rest.trim_start().split_once(' ')?;
        (v, a)
    } else {
        command.split_once(' ')?
    };
    Some((verb, shell_unquote(arg.trim())?))
}

/// Undoes git's `sq_quote`: single-quoted runs, with `'\''`-style escapes between them.
fn shell_unquote(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next()? {
                    '\'' => break,
                    c => out.push(c),
                }
            },
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    Some(out)
}

/// Parses the JSON request as protojson does: camelCase or the proto's snake_case names.
pub fn parse_payload(text: &str) -> Result<Payload, UsageError> {
    let bad = |m: String| UsageError::Payload(m);
    if text.trim().is_empty() {
        return Err(bad("empty payload".into()));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let obj = value.as_object().ok_or_else(|| bad("expected a JSON object".into()))?;
    let mut p = Payload::default();
    for (key, v) in obj {
        match snake(key).as_str() {
            "repository" => p.repository = Some(parse_repository(v)?),
            "git_config_options" => p.git_config_options = strings(v, key)?,
            "git_protocol" => p.git_protocol = string(v, key)?,
            "gl_id" => p.gl_id = string(v, key)?,
            "gl_repository" => p.gl_repository = string(v, key)?,
            "gl_username" => p.gl_username = string(v, key)?,
            "stdin" => {}
            _ => return Err(bad(format!("unknown field {key:?}"))),
        }
    }
    Ok(p)
}

fn parse_repository(v: &Value) -> Result<Repository, UsageError> {
    let obj: &Map<String, Value> =
        v.as_object().ok_or_else(|| UsageError::Payload("repository: expected an object".into()))?;
    let mut r = Repository::default();
    for (key, v) in obj {
        match snake(key).as_str() {
            "storage_name" => r.storage_name = string(v, key)?,
            "relative_path" => r.relative_path = string(v, key)?,
            "git_object_directory" => r.git_object_directory = string(v, key)?,
            "git_alternate_object_directories" => r.git_alternate_object_directories = strings(v, key)?,
            "gl_repository" => r.gl_repository = string(v, key)?,
            "gl_project_path" => r.gl_project_path = string(v, key)?,
            _ => return Err(UsageError::Payload(format!("repository: unknown field {key:?}"))),
        }
    }
    Ok(r)
}

fn snake(key: &str) -> String {
    let mut out = String::new();
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn string(v: &Value, key: &str) -> Result<String, UsageError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        _ => Err(UsageError::Payload(format!("{key}: expected a string"))),
    }
}

fn strings(v: &Value, key: &str) -> Result<Vec<String>, UsageError> {
    match v {
        Value::Array(items) => items.iter().map(|i| string(i, key)).collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err(UsageError::Payload(format!("{key}: expected an array of strings"))),
    }
}

/// Runs the call, pumping this process's stdin/stdout/stderr; returns the remote exit status.
pub async fn run(address: &str, token: Option<&str>, service: Service, payload: Payload) -> Result<i32, String> {
    let mut channel = client::connect(address, token).await.map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel::<bytes::Bytes>(crate::streamio::CHANNEL_DEPTH);
    tokio::spawn(async move {
        let mut stdin = async_stdin();
        // Chunks cut from one reused buffer (see `ReadBuffer`), sent as they are read.
        let mut buf = crate::streamio::ReadBuffer::default();
        while let Ok(Some(chunk)) = buf.read(&mut stdin).await {
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    let chunks = ReceiverStream::new(rx);
    let p = payload;
    let name = service.name();
    let fail = |e: tonic::Status| format!("{name}: {}", e.message());
    // Each service has its own message types; the shape of the exchange is the same.
    macro_rules! exchange {
        ($path:literal, $req:ident, $resp:ident, { $($field:ident: $value:expr),* $(,)? }) => {{
            let first = $req { repository: p.repository.clone(), $($field: $value,)* ..Default::default() };
            let rest = chunks.map(|stdin| $req { stdin, ..Default::default() });
            let requests = futures::stream::once(async { first }).chain(rest).map(Ok);
            // Framed by `bulk`: stdin's chunks go out as they were read, without a copy.
            let mut responses = crate::bulk::call::<_, _, $req, $resp>(&mut channel, $path, Box::pin(requests), MAX_RESPONSE)
                .await
                .map_err(fail)?;
            let (mut out, mut err) = (async_stdout(), tokio::io::stderr());
            let mut code = 0;
            while let Some(msg) = responses.message().await.map_err(fail)? {
                if !msg.stdout.is_empty() {
                    out.write_all(&msg.stdout).await.map_err(|e| format!("write stdout: {e}"))?;
                    out.flush().await.map_err(|e| format!("write stdout: {e}"))?;
                }
                if !msg.stderr.is_empty() {
                    let _ = err.write_all(&msg.stderr).await;
                }
                if let Some(status) = msg.exit_status {
                    code = status.value;
                }
            }
            Ok(code)
        }};
    }
    match service {
        Service::UploadPack => {
            exchange!("/gitaly.SSHService/SSHUploadPack", SshUploadPackRequest, SshUploadPackResponse, {
                git_config_options: p.git_config_options.clone(),
                git_protocol: p.git_protocol.clone(),
            })
        }
        Service::ReceivePack => {
            exchange!("/gitaly.SSHService/SSHReceivePack", SshReceivePackRequest, SshReceivePackResponse, {
                gl_id: p.gl_id.clone(),
                gl_repository: p.gl_repository.clone(),
                gl_username: p.gl_username.clone(),
                git_protocol: p.git_protocol.clone(),
                git_config_options: p.git_config_options.clone(),
            })
        }
        Service::UploadArchive => {
            exchange!("/gitaly.SSHService/SSHUploadArchive", SshUploadArchiveRequest, SshUploadArchiveResponse, {})
        }
    }
}

/// Standard input as an async reader: a non-blocking pipe when git gives us one (no thread hop per read),
/// else tokio's blocking-thread stdin.
fn async_stdin() -> Box<dyn tokio::io::AsyncRead + Unpin + Send> {
    let fd = std::io::stdin().as_fd().try_clone_to_owned();
    match fd.map(|fd| tokio::net::unix::pipe::Receiver::from_owned_fd(crate::git::grow_pipe(fd))) {
        Ok(Ok(pipe)) => Box::new(pipe),
        _ => Box::new(tokio::io::stdin()),
    }
}

/// Standard output as an async writer, a non-blocking pipe when possible.
fn async_stdout() -> Box<dyn tokio::io::AsyncWrite + Unpin + Send> {
    let fd = std::io::stdout().as_fd().try_clone_to_owned();
    match fd.map(|fd| tokio::net::unix::pipe::Sender::from_owned_fd(crate::git::grow_pipe(fd))) {
        Ok(Ok(pipe)) => Box::new(pipe),
        _ => Box::new(tokio::io::stdout()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn plain_mode_from_git_arguments() {
        let args: Vec<String> = ["-o", "SendEnv=GIT_PROTOCOL", "rgitaly", "git-upload-pack '/default/group/p.git'"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let inv = parse(&args, env(&[("GIT_PROTOCOL", "version=2")])).unwrap();
        let Invocation::Call { service, payload } = inv else { panic!() };
        assert_eq!(service, Service::UploadPack);
        let repo = payload.repository.unwrap();
        assert_eq!((repo.storage_name.as_str(), repo.relative_path.as_str()), ("default", "group/p.git"));
        assert_eq!(payload.git_protocol, "version=2");

        let args: Vec<String> =
            ["-p", "22", "host", "git-receive-pack 'default/it'\\''s.git'"].iter().map(|s| s.to_string()).collect();
        let Invocation::Call { service, payload } = parse(&args, env(&[("GL_ID", "key-1")])).unwrap() else { panic!() };
        assert_eq!(service, Service::ReceivePack);
        assert_eq!(payload.repository.unwrap().relative_path, "it's.git");
        assert_eq!(payload.gl_id, "key-1");
    }

    #[test]
    fn probe_and_errors() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse(&a(&["-G", "host"]), env(&[])).unwrap(), Invocation::ProbeVariant);
        assert_eq!(parse(&a(&["upload-pack", "-G", "host"]), env(&[])).unwrap(), Invocation::ProbeVariant);
        assert_eq!(parse(&a(&[]), env(&[])).unwrap_err(), UsageError::NoCommand);
        assert!(matches!(parse(&a(&["h", "git-evil '/a/b'"]), env(&[])), Err(UsageError::BadCommand(_))));
        assert!(matches!(parse(&a(&["h", "git-upload-pack '/onlystorage'"]), env(&[])), Err(UsageError::BadPath(_))));
    }

    #[test]
    fn payload_accepts_both_name_styles() {
        let camel = r#"{"repository":{"storageName":"default","relativePath":"a.git"},"gitProtocol":"version=2","gitConfigOptions":["a.b=c"]}"#;
        let snake = r#"{"repository":{"storage_name":"default","relative_path":"a.git"},"git_protocol":"version=2","git_config_options":["a.b=c"]}"#;
        assert_eq!(parse_payload(camel).unwrap(), parse_payload(snake).unwrap());
        assert!(parse_payload(r#"{"bogus":1}"#).is_err());
        assert!(parse_payload("not json").is_err());
        let args = vec!["upload-pack".to_string(), "gitaly".to_string(), "git-upload-pack x".to_string()];
        let Invocation::Call { service, payload } = parse(&args, env(&[("GITALY_PAYLOAD", snake)])).unwrap() else {
            panic!()
        };
        assert_eq!(service, Service::UploadPack);
        assert_eq!(payload.git_config_options, vec!["transfer.hideRefs=!refs".to_string(), "a.b=c".to_string()]);
    }
}
