//! The privileged tier: every test that needs root and the machine's real parts (loop
//! devices and mounts, udevd, a private dockerd, OSTree sysroots with deployments), in one
//! binary so that the shared rig (`tests/common`) is compiled and linked once. Built only
//! with the feature `privileged-tests` (`scripts/test` turns it on); `cargo test
//! --workspace` without it runs the unprivileged tier, which any user can run anywhere.

#[path = "../common/mod.rs"]
mod common;

mod agent;
mod agent_watch;
mod aklite;
mod apps;
mod check_clock;
mod compose_cli;
mod docker_engine;
mod faults_apps;
mod faults_crash;
mod faults_disk;
mod faults_docker;
mod faults_media;
mod faults_overlap;
mod faults_power;
mod hostile_meta;
mod hostile_stick;
mod install_run;
mod media;
mod ostree_sysroot;
mod phases;
mod site_report;
