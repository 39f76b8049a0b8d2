//! The Foundries.io flavour of TUF, as devices running aktualizr-lite verify it.
//!
//! Not TUF 1.0: capitalised `_type`, upper-case `keytype`, opaque key ids, RSA-PSS with a
//! recovered salt length, and a bundle index (`bundle-targets.json`) signed by the targets
//! role. `canonical`, `strict` and `keys` are the primitives, `envelope` and `meta` parse,
//! `verify` decides. Verification only: signing belongs to the test kit and the tools that
//! make bundles, never to a device.

pub mod canonical;
pub mod clock;
pub mod envelope;
pub mod error;
pub mod keys;
pub mod meta;
pub mod strict;
pub mod verify;

pub use clock::Clock;
pub use error::{Error, Kind, Result};
pub use meta::{now_utc, BundleIndex, Envelope, Root, Target};
pub use verify::{verify_bundle, BundleRules, MetaSource, Trust, Verified};
