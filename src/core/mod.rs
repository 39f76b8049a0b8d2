//! The evaluation core: what a bundle is, whether it is genuine, what the device is and
//! runs, which target it would take and whether its policy lets it. Nothing here changes
//! the device; the commands and the agent build on it.

pub mod bundle;
pub mod context;
pub mod device;
pub mod evaluate;
pub mod running;
pub mod select;
pub mod signature;
pub mod tufdir;
