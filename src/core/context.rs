//! Where a command's configuration comes from, and that configuration loaded once.
//!
//! Every command names its config and policy the same way (`-c`/`-p`, or the defaults), and
//! a flow that runs several steps (the agent: media policy, then install, then `run`) loads
//! them once and hands them on, so that one update never sees two versions of the device's
//! configuration. What the device has recorded (our state, aktualizr-lite's database) is
//! read once per command too, as [`Records`], where the command holds the update lock.

use std::path::PathBuf;

use crate::aklite::View;
use crate::config::Config;
use crate::error::Result;
use crate::policy::Policy;
use crate::state::State;

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

/// What the device has recorded: our state and what aktualizr-lite knows. One command reads
/// them once, so that its check, its callbacks and its install agree on what runs.
#[derive(Debug, Clone)]
pub struct Records {
    pub state: State,
    pub aklite: View,
}

impl Records {
    pub fn load(config: &Config) -> Result<Records> {
        Ok(Records {
            state: State::load(&config.state_dir())?,
            aklite: View::load(config),
        })
    }
}
