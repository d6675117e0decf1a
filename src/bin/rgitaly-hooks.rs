//! `rgitaly-hooks`: what git runs as its pre-receive, update, post-receive and reference-transaction
//! hooks for every git process rgitaly starts that may update refs (the analogue of upstream's
//! `gitaly-hooks`). It knows nothing itself: it reads the daemon's signed payload from
//! `GITALY_HOOKS_PAYLOAD`, hands the hook with its stdin to the daemon's HookService on the internal
//! socket, relays the answer's stdout and stderr, and exits with the hook's exit status. Any failure to
//! do so refuses the update (exit 1): a hook that cannot run must not let a push through unchecked.
//!
//! Which hook it is comes from the name it is run under (rgitaly links it as each hook), or from the
//! first argument when run as `rgitaly-hooks <hook> …` (upstream's form).

use std::io::{Read, Write};

use rgitaly::hook::payload::{hooks, Payload, ENV};
use rgitaly::proto::gitaly::hook_service_client::HookServiceClient;
use rgitaly::proto::gitaly::reference_transaction_hook_request::State;
use rgitaly::proto::gitaly::*;

const HOOKS: &[&str] = &["pre-receive", "update", "post-receive", "reference-transaction"];

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let argv0 = args.first().map(|a| a.rsplit('/').next().unwrap_or(a).to_string()).unwrap_or_default();
    let hook = if HOOKS.contains(&argv0.as_str()) {
        args.remove(0);
        argv0
    } else if args.len() >= 2 && (args[1] == "--help" || args[1] == "-h") {
        println!(
            "usage: rgitaly-hooks HOOK [ARGS...]\n\nRun by git as its {} hook; not meant to be run by hand.",
            HOOKS.join(", ")
        );
        std::process::exit(0);
    } else if args.len() >= 2 {
        args.drain(..2).nth(1).unwrap_or_default()
    } else {
        fail(&format!("requires hook name. args: {:?}", &args[1..]));
    };
    if !HOOKS.contains(&hook.as_str()) {
        fail(&format!("subcommand name invalid: {hook:?}"));
    }
    let payload = match std::env::var(ENV)
        .map_err(|_| "no GITALY_HOOKS_PAYLOAD".to_string())
        .and_then(|v| Payload::decode(&v).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => fail(&format!("error when getting hooks payload: {e}")),
    };
    let bit = match hook.as_str() {
        "pre-receive" => hooks::PRE_RECEIVE,
        "update" => hooks::UPDATE,
        "post-receive" => hooks::POST_RECEIVE,
        _ => hooks::REFERENCE_TRANSACTION,
    };
    if payload.requested_hooks & bit == 0 {
        std::process::exit(0);
    }
    // Without a Praefect transaction the daemon has nothing to vote on (as upstream): spare the call.
    if hook == "reference-transaction" && payload.transaction.is_none() {
        if args.len() != 1 {
            fail("reference-transaction hook is missing required arguments");
        }
        if !matches!(args[0].as_str(), "prepared" | "committed" | "aborted") {
            fail(&format!("reference-transaction hook has invalid state: {:?}", args[0]));
        }
        // git writes the updates and expects them read.
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("start tokio runtime");
    match runtime.block_on(run(&hook, args, payload)) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // The pushing user sees git's `remote:` lines: no internal paths there, as upstream.
            eprintln!("error executing git hook");
            log(&format!("{hook}: {e}"));
            std::process::exit(1);
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("rgitaly-hooks: {msg}");
    std::process::exit(1);
}

/// Appends to `$GITALY_LOG_DIR/gitaly_hooks.log` (the daemon's `[logging] dir`), as upstream's hooks log;
/// without a log directory the details are dropped, as upstream drops them.
fn log(msg: &str) {
    use std::io::Write as _;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let line = format!("time={now} pid={} level=error msg={msg:?}\n", std::process::id());
    let file = std::env::var_os("GITALY_LOG_DIR").and_then(|dir| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(std::path::Path::new(&dir).join("gitaly_hooks.log"))
            .ok()
    });
    if let Some(mut f) = file {
        let _ = f.write_all(line.as_bytes());
    }
}

fn environment() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some(format!("{}={}", k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Push options as git hands them to hooks.
fn push_options() -> Vec<String> {
    let Some(n) = std::env::var("GIT_PUSH_OPTION_COUNT").ok().and_then(|n| n.parse::<usize>().ok()) else {
        return Vec::new();
    };
    (0..n).map(|i| std::env::var(format!("GIT_PUSH_OPTION_{i}")).unwrap_or_default()).collect()
}

fn read_stdin() -> Result<Vec<u8>, String> {
    let mut all = Vec::new();
    std::io::stdin().read_to_end(&mut all).map_err(|e| format!("read stdin: {e}"))?;
    Ok(all)
}

/// A message's worth of stdin: a push of many refs goes in several messages, each far below the
/// server's message limit.
const CHUNK: usize = 128 << 10;

/// The first message (no stdin), then stdin in chunks made by `wrap`.
fn with_stdin<T>(first: T, stdin: Vec<u8>, wrap: fn(Vec<u8>) -> T) -> impl futures::Stream<Item = T> {
    let chunks: Vec<T> = stdin.chunks(CHUNK).map(|c| wrap(c.to_vec())).collect();
    futures::stream::iter(std::iter::once(first).chain(chunks))
}

/// stdout, stderr and exit status of one answer message.
trait Answer {
    fn parts(self) -> (Vec<u8>, Vec<u8>, Option<i32>);
}

macro_rules! answer {
    ($t:ty) => {
        impl Answer for $t {
            fn parts(self) -> (Vec<u8>, Vec<u8>, Option<i32>) {
                (self.stdout, self.stderr, self.exit_status.map(|e| e.value))
            }
        }
    };
}
answer!(PreReceiveHookResponse);
answer!(PostReceiveHookResponse);
answer!(UpdateHookResponse);
answer!(ReferenceTransactionHookResponse);

/// Relays the answers; the exit status is the last one given (1 if none was).
async fn relay<T: Answer>(mut stream: tonic::Streaming<T>) -> Result<i32, String> {
    let mut code = None;
    while let Some(msg) = stream.message().await.map_err(|e| e.message().to_string())? {
        let (stdout, stderr, exit) = msg.parts();
        if !stderr.is_empty() {
            let _ = std::io::stderr().write_all(&stderr);
        }
        if !stdout.is_empty() {
            let _ = std::io::stdout().write_all(&stdout);
            let _ = std::io::stdout().flush();
        }
        if exit.is_some() {
            code = exit;
        }
    }
    Ok(code.unwrap_or(1))
}

async fn run(hook: &str, args: Vec<String>, payload: Payload) -> Result<i32, String> {
    let repository = Some(payload.repo().map_err(|e| e.to_string())?);
    let channel =
        rgitaly::client::connect(&format!("unix:{}", payload.internal_socket), Some(&payload.internal_socket_token))
            .await
            .map_err(|e| e.to_string())?;
    let mut client = HookServiceClient::new(channel);
    let environment_variables = environment();
    let status = |e: tonic::Status| e.message().to_string();
    match hook {
        "pre-receive" => {
            let first = PreReceiveHookRequest {
                repository,
                environment_variables,
                git_push_options: push_options(),
                stdin: Vec::new(),
            };
            let reqs = with_stdin(first, read_stdin()?, |stdin| PreReceiveHookRequest { stdin, ..Default::default() });
            relay(client.pre_receive_hook(reqs).await.map_err(status)?.into_inner()).await
        }
        "post-receive" => {
            let first = PostReceiveHookRequest {
                repository,
                environment_variables,
                git_push_options: push_options(),
                stdin: Vec::new(),
            };
            let reqs = with_stdin(first, read_stdin()?, |stdin| PostReceiveHookRequest { stdin, ..Default::default() });
            relay(client.post_receive_hook(reqs).await.map_err(status)?.into_inner()).await
        }
        "update" => {
            let [reference, old_value, new_value] =
                <[String; 3]>::try_from(args).map_err(|_| "update hook expects exactly three arguments".to_string())?;
            let req = UpdateHookRequest {
                repository,
                environment_variables,
                r#ref: reference.into_bytes(),
                old_value,
                new_value,
            };
            relay(client.update_hook(req).await.map_err(status)?.into_inner()).await
        }
        _ => {
            let state = match args.first().map(String::as_str) {
                Some("prepared") => State::Prepared,
                Some("committed") => State::Committed,
                Some("aborted") => State::Aborted,
                Some(other) => return Err(format!("reference-transaction hook has invalid state: {other:?}")),
                None => return Err("reference-transaction hook is missing required arguments".into()),
            };
            let first = ReferenceTransactionHookRequest {
                repository,
                environment_variables,
                stdin: Vec::new(),
                state: state as i32,
            };
            let reqs = with_stdin(first, read_stdin()?, |stdin| ReferenceTransactionHookRequest {
                stdin,
                ..Default::default()
            });
            let stream = client.reference_transaction_hook(reqs).await.map_err(status)?;
            relay(stream.into_inner()).await
        }
    }
}
