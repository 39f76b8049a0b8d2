//! placeholder (issue 5): the operator's detached signature over a bundle's tuf/.
#![allow(dead_code, unused_variables)]
use crate::policy::SignaturePolicy;
use std::path::{Path, PathBuf};
pub const FILE: &str = "usb-update.sig";
pub fn sign(key: &Path, bundle_dir: &Path) -> anyhow::Result<PathBuf> {
    todo!()
}
pub fn verify(bundle_dir: &Path, policy: &SignaturePolicy) -> crate::Result<Option<String>> {
    todo!()
}
