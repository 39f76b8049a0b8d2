//! What the tests, the demo and the benchmarks of usb-update need and a device never has.
//!
//! - [`gen`]: the writer of byte-compatible offline bundles (TUF, OSTree repo, apps), with
//!   the attack builders;
//! - [`keys`]: signing keys (the device crate and `foundries-tuf` only verify);
//! - [`testsys`]: a throw-away OSTree sysroot in a directory, booted by simulation;
//! - [`testdb`]: aktualizr-lite databases made from the schema facts;
//! - [`fuzzing`]: the checks of the metadata, signature and OCI fuzz targets, replayed by
//!   the tests over the corpora.
//!
//! It turns on the device crate's test doubles (`failpoints`, `simulation`): a device is
//! built with `cargo build --release -p usb-update`, which has neither.

pub mod fuzzing;
pub mod gen;
pub mod keys;
pub mod testdb;
pub mod testsys;
