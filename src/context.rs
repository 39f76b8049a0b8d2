//! Where a command's configuration comes from, and that configuration loaded once.
//!
//! Every command names its config and policy the same way (`-c`/`-p`, or the defaults), and
//! a flow that runs several steps (the agent: media policy, then install, then `run`) loads
//! them once and hands them on, so that one update never sees two versions of the device's
//! configuration.

use std::path::PathBuf;

use crate::config::Config;
use crate::error::Result;
use crate::policy::Policy;

/// The config and policy files or directories (empty: the defaults).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub config: Vec<PathBuf>,
    pub policy: Vec<PathBuf>,
}

/// The device's configuration and policy, as loaded from [`Sources`].
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub policy: Policy,
}

impl Sources {
    pub fn load(&self) -> Result<Loaded> {
        Ok(Loaded {
            config: Config::load(&self.config)?,
            policy: Policy::load(&self.policy)?,
        })
    }
}
