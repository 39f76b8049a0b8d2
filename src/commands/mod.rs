//! The commands an operator (or aklite-offline's users) runs by hand: `check`, `install`,
//! `run` and `current`. Each is a thin layer over the core ([`crate::core`]) and the
//! backends ([`crate::ostree`], [`crate::apps`], [`crate::bootloader`], [`crate::aklite`]).

pub mod check;
pub mod current;
pub mod install;
pub mod report;
pub mod run;
