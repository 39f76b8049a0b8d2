//! `usb-update`: an offline (USB stick) update agent for OSTree + Docker Compose devices.
//!
//! The public facade is small: [`main`] (the binary), [`command`] (the CLI definition, for
//! man pages and completions), the error type with its exit codes, and the TUF flavour.
//! Everything else is internal. The workspace's tests, test kit and fuzz targets reach the
//! internals through the `internals` feature, which a device build does not turn on; so in
//! a device build the compiler sees every internal item and flags what nothing uses.
//!
//! Module map, by layer (find a behaviour from its name):
//!
//! Commands and the agent (what runs):
//! - [`cli`]: the command line (`usb-update ...`, and `aklite-offline ...` by argv[0]);
//! - `commands`: `check` (the core's report, for people), `install` (pull and deploy,
//!   record the pending installation), `run` (finish, or record the rollback of, a pending
//!   install), `current` (what the device runs now, read-only);
//! - `agent`: `agent handle|finalize|watch`, the automatic flow from stick to finished
//!   update; `agent::media` (USB sticks: udev properties, which to take, read-only mounts,
//!   the bundle on them) and `agent::medium` (one flow for every medium);
//!
//! The evaluation core (changes nothing), `core`:
//! - `bundle` (the offline bundle on a hostile medium), `tufdir` (its `tuf/`, read once),
//!   `signature` (the operator's signature over a bundle), `device` (hardware id, tags,
//!   trusted roots), `running` (what the device runs: the booted commit is the truth),
//!   `select` (which target, and why not the others), `context` (config and policy, loaded
//!   once per command), `evaluate` (verification + selection + policy: a report and a plan);
//!
//! Inputs and records:
//! - `config` (aktualizr-lite compatible `sota.toml`, `conf.d`), `policy` (the device
//!   policy), `state` (the agent's persistent state), `status` (LEDs, console,
//!   status.json, sd_notify, the report on the stick);
//!
//! Backends (the system being updated):
//! - `ostree` (the sysroot: booted / staged / simulated deployment), `apps` (Compose
//!   apps: the app store, images into Docker, projects, health, rollback), `bootloader`
//!   (boot counting, boot firmware flag), `aklite` (living beside aktualizr-lite: its
//!   database, import file, current-target, callbacks);
//!
//! Safe I/O and process rules:
//! - `hostile_fs` (the one way files on the stick are opened), `durable` (files of ours
//!   replaced whole, surviving a power cut), `lock` (one updater at a time, shared with
//!   aktualizr-lite), `watchdog` (an update that makes no progress is ended), `phase` (one
//!   log event per finished phase), `failpoint` (named crash points, `failpoints` feature),
//!   `overlap` (install's rootfs pull and apps at once, a failure of one cancelling the other);
//! - `clock`: the device's clock (simulated under `simulation`) and its image's build date;
//! - [`error`]: the error type and the exit-code table.

/// Internal modules: crate-private in a device build, public to the workspace's tests with
/// the `internals` feature.
macro_rules! internal {
    ($($(#[$attr:meta])* $name:ident;)*) => {$(
        $(#[$attr])*
        #[cfg(feature = "internals")]
        pub mod $name;
        $(#[$attr])*
        #[cfg(not(feature = "internals"))]
        mod $name;
    )*};
}

internal! {
    agent;
    aklite;
    apps;
    bootloader;
    cli;
    clock;
    commands;
    config;
    core;
    durable;
    failpoint;
    hostile_fs;
    lock;
    ostree;
    overlap;
    phase;
    policy;
    state;
    status;
    watchdog;
}

pub mod error;

pub use cli::{command, main};
pub use error::{Code, Error, OrCode, Result};
/// The Foundries TUF flavour (the `foundries-tuf` crate of this workspace).
pub use foundries_tuf as tuf;
