//! What every handler, the worker proxy and the server's assembly share: the config, the locator, the
//! git command factory and the repository cache, built once at boot. Its own module, below services and
//! the pool, so neither has to import the other to reach it.

use std::sync::Arc;

use crate::config::Config;
use crate::git::GitCmdFactory;
use crate::locator::Locator;

#[derive(Debug)]
pub struct Context {
    pub config: Config,
    pub locator: Locator,
    pub git: GitCmdFactory,
    /// The hook chain: payloads for git, GitLab and custom hooks for HookService.
    pub hooks: crate::hook::Hooks,
    /// Open repositories for in-process reads.
    pub repos: crate::odb::RepoCache,
}

pub type Ctx = Arc<Context>;
