//! `rgitaly-worker`: the write worker the daemon supervises (OperationService, WikiService).
//!
//! The pool is not built yet: the daemon serves those services as UNIMPLEMENTED and never starts this
//! binary. It exists so the workspace layout and packaging are final.

fn main() {
    eprintln!(
        "rgitaly-worker {}: the worker pool is not built yet; this binary is started by rgitaly",
        rgitaly::VERSION
    );
    std::process::exit(2);
}
