//! placeholder: see mod.rs
