//! Compose apps (`[pacman] type = "ostree+compose_apps"`): the app store under
//! `reset_apps_root`, images loaded into the Docker engine, compose projects under
//! `compose_apps_root`, their health, and the restore of the previous apps.
//!
//! - [`store`]: blobs copied from the bundle into the device's store, hashed while copied;
//! - [`docker`]: the engine API (image load from store blobs, containers, health);
//! - [`compose`]: compose files (services and pinned images) and the compose CLI;
//! - [`archive`]: safe extraction of an app's compose archive into its project directory.

pub mod archive;
pub mod compose;
pub mod docker;
pub mod store;
