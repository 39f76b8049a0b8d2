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
    /// A refusal or failure with a documented exit code, and what caused it when something
    /// did (kept for the log's chain; the one line already says it).
    #[error("{msg}")]
    Coded {
        code: Code,
        msg: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
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
        if e.chain().any(is_disk_full) {
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
            source: None,
        }
    }

    /// `what` failed because of `source`: exit `code`, or 60 when the cause is a full disk
    /// (the rule for every write of ours), the one line "what: source".
    pub fn caused(
        code: Code,
        what: impl std::fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let full = is_disk_full(&source);
        Error::Coded {
            code: if full { Code::NoSpace } else { code },
            msg: format!("{what}: {source}"),
            source: Some(Box::new(source)),
        }
    }

    /// Keep `cause` as the source of an error whose message already says why in words of
    /// its own (when the cause's own words say nothing to an operator).
    pub fn with_source(self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        match self {
            Error::Coded { code, msg, .. } => Error::Coded {
                code,
                msg,
                source: Some(Box::new(cause)),
            },
            internal => internal,
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

/// A full disk or an exceeded quota: the documented 60 wherever it happens.
pub(crate) fn is_disk_full(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|io| {
        io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(nix::libc::EDQUOT)
    })
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

    #[test]
    fn with_source_keeps_the_cause_and_the_words() {
        let e = Error::docker_unavailable("lost the engine: connection refused")
            .with_source(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(e.code(), Code::DockerUnavailable);
        assert_eq!(e.one_line(), "lost the engine: connection refused");
        let cause = std::error::Error::source(&e).expect("the cause is kept");
        assert!(cause.downcast_ref::<std::io::Error>().is_some());
    }

    #[test]
    fn or_code_keeps_the_cause_and_a_full_disk_is_60() {
        let io = |kind| std::io::Result::<()>::Err(std::io::Error::from(kind));
        let e = io(std::io::ErrorKind::NotFound)
            .or_code(Code::Copy, "reading blob x")
            .unwrap_err();
        assert_eq!(e.code(), Code::Copy);
        assert_eq!(e.one_line(), "reading blob x: entity not found");
        let cause = std::error::Error::source(&e).expect("the cause is kept");
        assert!(cause.downcast_ref::<std::io::Error>().is_some());
        let e = io(std::io::ErrorKind::StorageFull)
            .or_internal("writing y")
            .unwrap_err();
        assert_eq!(e.code(), Code::NoSpace);
        let e = std::io::Result::<()>::Err(std::io::Error::from_raw_os_error(nix::libc::EDQUOT))
            .or_internal("writing z")
            .unwrap_err();
        assert_eq!(e.code(), Code::NoSpace);
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any failure mapped to its exit code where it happens, keeping it as the source: one
/// way instead of a helper per module that turns the cause into text.
pub trait OrCode<T> {
    /// On error: exit `code` (60 for a full disk), the one line "what: cause".
    fn or_code(self, code: Code, what: impl std::fmt::Display) -> Result<T>;

    /// On error: exit 1 (60 for a full disk), the one line "what: cause".
    fn or_internal(self, what: impl std::fmt::Display) -> Result<T>
    where
        Self: Sized,
    {
        self.or_code(Code::Internal, what)
    }
}

impl<T, E: std::error::Error + Send + Sync + 'static> OrCode<T> for std::result::Result<T, E> {
    fn or_code(self, code: Code, what: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| Error::caused(code, what, e))
    }
}

/// Shorthand constructors, so call sites read as the rule they enforce.
macro_rules! ctor {
    ($($name:ident => $code:ident),* $(,)?) => {
        impl Error {
            $(pub fn $name(msg: impl Into<String>) -> Self { Error::new(Code::$code, msg) })*
        }
    };
}
ctor! {
    internal => Internal,
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
