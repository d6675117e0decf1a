//! `rgitaly-ssh`: a `GIT_SSH_COMMAND` that reaches rgitaly's SSHService. See [`rgitaly::ssh_client`].

use rgitaly::ssh_client::{self, Invocation};

const USAGE: &str = "\
usage: rgitaly-ssh upload-pack|receive-pack|upload-archive    (GITALY_PAYLOAD holds the JSON request)
       rgitaly-ssh [ssh options] HOST COMMAND                (as GIT_SSH_COMMAND: git clone ssh://rgitaly/STORAGE/PATH)

A GIT_SSH_COMMAND that reaches rgitaly's (or Gitaly's) SSHService instead of an ssh server.

environment:
  GITALY_ADDRESS   the server: unix:PATH, tcp://HOST:PORT or tls://HOST:PORT (required)
  GITALY_TOKEN     the server's auth token, if it has one
  GITALY_PAYLOAD   the request as JSON (upstream gitaly-ssh's way; the command then is the first argument)
  GITALY_WD        directory to change to first
  SSL_CERT_FILE    CA certificates for tls:// addresses

example:
  GITALY_ADDRESS=unix:/path/to/rgitaly.socket GIT_SSH_COMMAND=rgitaly-ssh \\
    git clone ssh://rgitaly/default/group/project.git
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if matches!(args.as_slice(), [a] if a == "--help" || a == "-h" || a == "help") {
        print!("{USAGE}");
        std::process::exit(0);
    }
    let invocation = match ssh_client::parse(&args, |k| std::env::var(k).ok()) {
        Ok(i) => i,
        Err(e) => fail(&e.to_string()),
    };
    let (service, payload) = match invocation {
        Invocation::ProbeVariant => std::process::exit(0),
        Invocation::Call { service, payload } => (service, payload),
    };
    if let Ok(wd) = std::env::var("GITALY_WD") {
        if std::env::set_current_dir(&wd).is_err() {
            fail(&format!("unable to chdir to {wd}"));
        }
    }
    let address = std::env::var("GITALY_ADDRESS").unwrap_or_default();
    if address.is_empty() {
        fail("gitaly address can not be empty (set GITALY_ADDRESS)");
    }
    let token = std::env::var("GITALY_TOKEN").ok();
    // One thread: the call is one stream each way, and a second worker thread only adds wakeups between
    // the two and an allocator arena that gives pages back (measured on a push: 1,534 futex calls and
    // 4,000-7,700 page faults with two threads; none and 900 with one).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("start tokio runtime");
    let result = runtime.block_on(ssh_client::run(&address, token.as_deref(), service, *payload));
    // Exit at once: a stdin read may still be blocked in the runtime's thread pool.
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("rgitaly-ssh: {msg}");
    std::process::exit(1);
}
