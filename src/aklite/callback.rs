//! `[pacman] callback_program`: run at the update steps aktualizr-lite runs it at, with the
//! environment it sets: `MESSAGE` (`check-for-update-pre`, `check-for-update-post`,
//! `download-pre`, `download-post`, `install-pre`, `install-post`, `install-final-pre`),
//! `CURRENT_TARGET` (the path of `current-target`), `CURRENT_TARGET_NAME`,
//! `INSTALL_TARGET_NAME` and `RESULT` when they apply.
//!
//! aktualizr-lite builds a shell command line from these values; we run the program
//! directly with them in its environment, so that a target name cannot become shell code.
//! As there, a program that does not exist is reported once and skipped, and a failing one
//! is only logged: it cannot stop an update.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::config::Config;

pub(crate) struct Callback {
    program: Option<PathBuf>,
    current_target: PathBuf,
}

/// One call: the step, and what it is about.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Event<'a> {
    pub message: &'a str,
    pub current: Option<&'a str>,
    pub install: Option<&'a str>,
    pub result: Option<&'a str>,
}

impl Callback {
    pub fn new(cfg: &Config) -> Callback {
        let program = cfg.pacman.callback_program.clone().filter(|p| {
            let there = p.exists();
            if !there {
                tracing::error!("callback_program({}) does not exist", p.display());
            }
            there
        });
        Callback {
            program,
            current_target: super::current_target::path(cfg),
        }
    }

    /// Run the program for `e` (nothing when none is configured).
    pub fn run(&self, e: Event) {
        let Some(program) = &self.program else {
            return;
        };
        let mut cmd = Command::new(program);
        cmd.env("MESSAGE", e.message)
            .env("CURRENT_TARGET", &self.current_target)
            .stdin(Stdio::null());
        for (var, value) in [
            ("CURRENT_TARGET_NAME", e.current),
            ("INSTALL_TARGET_NAME", e.install),
            ("RESULT", e.result),
        ] {
            match value {
                Some(v) => cmd.env(var, v),
                None => cmd.env_remove(var),
            };
        }
        // Our stdout is the operator's lines (or JSON): the program's output goes to stderr.
        if let Ok(fd) = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned() {
            cmd.stdout(Stdio::from(fd));
        }
        tracing::debug!("running callback {} {:?}", program.display(), e);
        match cmd.status() {
            Ok(s) if s.success() => {}
            Ok(s) => tracing::error!("callback {} {}: {s}", program.display(), e.message),
            Err(err) => tracing::error!("callback {} {}: {err}", program.display(), e.message),
        }
    }
}
