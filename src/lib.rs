//! `usb-update`: an offline (USB stick) update agent for OSTree + Docker Compose devices.
//!
//! Module map (find a behaviour from its name):
//! - [`cli`]: the command line (`usb-update ...`, and `aklite-offline ...` by argv[0]);
//! - [`clock`]: the device's clock (simulated under `simulation`) and its image's build date;
//! - [`error`]: the error type and the exit-code table;
//! - [`config`]: aktualizr-lite compatible configuration (`sota.toml`, `conf.d`);
//! - [`context`]: where a command's config and policy come from, loaded once;
//! - [`policy`]: the device policy (`/usr/lib|etc/usb-update/policy*.toml`);
//! - [`device`]: who the device is: hardware id, tags, type, trusted roots, running target;
//! - [`tuf`]: the Foundries TUF flavour: canonical JSON, keys, metadata, chain verification;
//! - [`hostile_fs`]: the one way files on the stick are opened: beneath, no symlinks, no
//!   blocking, regular files only, capped reads and listings;
//! - [`bundle`]: the offline bundle on a hostile medium (`tuf/`, `ostree_repo/`, `apps/`);
//! - [`tufdir`]: the bundle's `tuf/`, read once for the operator signature and TUF;
//! - [`select`]: which target of a verified bundle to install, and why the others are not;
//! - [`evaluate`]: the core `check`, `install` and the agent share: verification +
//!   selection + policy, as a report and a plan;
//! - [`check`]: the `check` command: that report, as lines for people;
//! - [`install`]: the `install` command: pull and deploy, record the pending installation;
//! - [`finalize`]: the `run` command: finish (or record the rollback of) a pending install;
//! - [`current`]: the `current` command: what the device runs now (read-only);
//! - [`running`]: what the device runs: the booted commit is the truth;
//! - [`agent`]: `agent handle|finalize|watch`: the automatic flow from stick to finished update;
//! - [`aklite`]: living beside aktualizr-lite: its database, import file, current-target, callbacks;
//! - [`apps`]: Compose apps: the app store, images into Docker, projects, health, rollback;
//! - [`bootloader`]: the bootloader environment (boot counting, boot firmware flag);
//! - [`ostree`]: the device's OSTree sysroot (booted / staged / simulated deployment);
//! - [`durable`]: files of ours replaced whole, surviving a crash or a power cut;
//! - [`state`]: the agent's persistent state under `<storage.path>/usb-update/`;
//! - [`media`]: USB sticks: udev properties, which to take, read-only mounts, the bundle on them;
//! - [`medium`]: one flow for every medium (ours to mount or another program's), `agent watch`;
//! - [`status`]: what the operator sees: LEDs, console, status.json, sd_notify, the report;
//! - [`site_report`]: the `report` command: the agent's reports on a stick, read back;
//! - [`signature`]: the operator's signature over a bundle (`usb-update bundle sign`);
//! - [`lock`]: one updater at a time (the flock shared with aktualizr-lite);
//! - [`watchdog`]: an update that makes no progress is ended, not left hanging;
//! - [`phase`]: one log event per finished phase of install and run (for benchmarks);
//! - [`failpoint`]: named crash points for the crash-safety tests (debug builds only);

pub mod agent;
pub mod aklite;
pub mod apps;
pub mod bootloader;
pub mod bundle;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod context;
pub mod current;
pub mod device;
pub mod durable;
pub mod error;
pub mod evaluate;
pub mod failpoint;
pub mod finalize;
pub mod hostile_fs;
pub mod install;
pub mod lock;
pub mod media;
pub mod medium;
pub mod ostree;
pub mod phase;
pub mod policy;
pub mod running;
pub mod select;
pub mod signature;
pub mod site_report;
pub mod state;
pub mod status;
pub mod tufdir;
pub mod watchdog;

pub use error::{Code, Error, OrCode, Result};
/// The Foundries TUF flavour (the `foundries-tuf` crate of this workspace).
pub use foundries_tuf as tuf;
