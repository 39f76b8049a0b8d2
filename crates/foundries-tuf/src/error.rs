//! Why metadata was refused. Each kind is one exit code of the agent (`aklite-offline`'s
//! numbers), so the device crate maps them one to one and keeps the message.

/// What kind of refusal, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A role file that does not parse or says the wrong thing (4).
    MetadataUpdate,
    /// A signature, threshold, version or hash check failed (11).
    Security,
    /// A role expired (12).
    Expired,
    /// A file the chain needs is missing (14).
    NotFound,
    /// The bundle's own index (`bundle-targets.json`) or a file name is wrong (15).
    InvalidBundle,
}

/// A refusal: its kind and a one-line reason that names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct Error {
    pub kind: Kind,
    pub msg: String,
}

pub type Result<T> = std::result::Result<T, Error>;

macro_rules! constructors {
    ($($name:ident => $kind:ident),* $(,)?) => {
        impl Error {
            $(pub fn $name(msg: impl Into<String>) -> Self {
                Error { kind: Kind::$kind, msg: msg.into() }
            })*
        }
    };
}

constructors! {
    metadata_update => MetadataUpdate,
    security => Security,
    expired => Expired,
    not_found => NotFound,
    invalid_bundle => InvalidBundle,
}
