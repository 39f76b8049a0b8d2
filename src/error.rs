//! The error type that crosses module boundaries and decides the process exit code.
//!
//! Every variant carries a one-line reason that names the file or object it is about; the
//! numbers are those of docs/exit-codes.md (aktualizr-lite's numbers where one exists).

use std::fmt;

/// An exit code of `usb-update` / `aklite-offline`. See docs/exit-codes.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(into = "u8")]
pub enum Code {
    Ok = 0,
    Internal = 1,
    MetadataUpdate = 4,
    NoMatchingTarget = 6,
    ContentMissing = 8,
    Security = 11,
    Expired = 12,
    MetadataNotFound = 14,
    InvalidBundle = 15,
    TargetNotFound = 20,
    Busy = 30,
    NothingPending = 40,
    Copy = 50,
    /// The Docker engine cannot be reached (not running, socket missing): nothing changed.
    DockerUnavailable = 52,
    NoSpace = 60,
    BootFirmware = 90,
    RolledBack = 99,
    NeedsReboot = 100,
    AppsNeedRestart = 101,
    Downgrade = 102,
    PolicyRefused = 103,
    RunBeforeReboot = 104,
    /// The policy requires an operator signature and the stick has none by a trusted key.
    Signature = 105,
    RollbackAppsUnknown = 110,
    RollbackImpossible = 120,
}

impl From<Code> for u8 {
    fn from(c: Code) -> u8 {
        c as u8
    }
}

impl Code {
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", *self as u8)
    }
}

/// A failure with the exit code it maps to and a one-line reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A refusal or failure with a documented exit code.
    #[error("{msg}")]
    Coded { code: Code, msg: String },
    /// Anything unexpected (I/O on the device, libostree, bugs): exit 1, with its context chain.
    #[error(transparent)]
    Internal(anyhow::Error),
}

/// A refusal by the TUF verifier: its kind is the exit code, its message is kept.
impl From<crate::tuf::Error> for Error {
    fn from(e: crate::tuf::Error) -> Error {
        use crate::tuf::Kind;
        let code = match e.kind {
            Kind::MetadataUpdate => Code::MetadataUpdate,
            Kind::Security => Code::Security,
            Kind::Expired => Code::Expired,
            Kind::NotFound => Code::MetadataNotFound,
            Kind::InvalidBundle => Code::InvalidBundle,
        };
        Error::new(code, e.msg)
    }
}

impl From<anyhow::Error> for Error {
    /// A full disk anywhere in the chain (a state file, the bootloader environment, the
    /// trusted metadata) is the documented 60, not an internal error.
    fn from(e: anyhow::Error) -> Error {
        let full = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>().is_some_and(|io| {
                io.kind() == std::io::ErrorKind::StorageFull
                    || io.raw_os_error() == Some(nix::libc::EDQUOT)
            })
        });
        if full {
            Error::new(Code::NoSpace, format!("{e:#}").replace('\n', " "))
        } else {
            Error::Internal(e)
        }
    }
}

impl Error {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Error::Coded {
            code,
            msg: msg.into(),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            Error::Coded { code, .. } => *code,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// The one-line reason shown to the operator (an anyhow chain is joined with ": ").
    pub fn one_line(&self) -> String {
        match self {
            Error::Coded { msg, .. } => escape_controls(msg),
            Error::Internal(e) => escape_controls(&format!("{e:#}").replace('\n', " ")),
        }
    }
}

/// `s` with its control characters escaped: whatever a message quotes from a stick (a
/// name, a parser's complaint about its bytes), it stays one line on the console and in
/// the report.
fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_is_one_line_whatever_the_message_quotes() {
        let e = Error::signature("unknown field `a\nb\r\u{1b}[2J`");
        assert_eq!(e.one_line(), "unknown field `a\\nb\\r\\u{1b}[2J`");
        let e = Error::Internal(anyhow::anyhow!("first\nsecond\tthird"));
        assert_eq!(e.one_line(), "first second\\tthird");
        assert_eq!(Error::copy("plain é").one_line(), "plain é");
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand constructors, so call sites read as the rule they enforce.
macro_rules! ctor {
    ($($name:ident => $code:ident),* $(,)?) => {
        impl Error {
            $(pub fn $name(msg: impl Into<String>) -> Self { Error::new(Code::$code, msg) })*
        }
    };
}
ctor! {
    metadata_update => MetadataUpdate,
    no_matching_target => NoMatchingTarget,
    content_missing => ContentMissing,
    security => Security,
    expired => Expired,
    not_found => MetadataNotFound,
    invalid_bundle => InvalidBundle,
    target_not_found => TargetNotFound,
    downgrade => Downgrade,
    policy => PolicyRefused,
    copy => Copy,
    docker_unavailable => DockerUnavailable,
    signature => Signature,
}
