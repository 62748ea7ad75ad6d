//! One error enum for the whole binding, converted in from every OpenMLS,
//! storage and codec error and out to the exception classes that
//! `proto/errors.py` defines. Rust never defines exception classes.
//!
//! OpenMLS nests its errors several levels deep (`AddMembersError` ->
//! `GroupStateError` -> `MlsGroupStateError::PendingCommit`, ...). Each OpenMLS
//! error type we meet implements [`Classify`], a match on its variants that
//! recurses into nested errors; [`classify`] turns the answer into an
//! [`Error`]. The message passed to Python is the `Display` text, which never
//! contains key material or message content.

use std::fmt::Display;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// Every failure the binding can report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bytes could not be parsed as the expected MLS structure.
    #[error("malformed input: {0}")]
    Malformed(String),
    /// A parsed message failed validation (signature, replay, wrong group...).
    #[error("invalid message: {0}")]
    Invalid(String),
    /// The message belongs to an epoch we cannot process.
    #[error("wrong epoch: {0}")]
    WrongEpoch(String),
    /// We (or the sender) are not a member of the group.
    #[error("not a member: {0}")]
    NotAMember(String),
    /// No group state with this id exists.
    #[error("unknown group")]
    UnknownGroup,
    /// The state file could not be read, written or decrypted.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The ciphersuite is not supported by this build.
    #[error("unsupported ciphersuite: {0}")]
    UnsupportedCiphersuite(String),
    /// A commit is pending and must be merged or cleared first.
    #[error("a commit is pending: merge or clear it first ({0})")]
    PendingCommit(String),
    /// A Welcome carried no secrets for any of our KeyPackages.
    #[error("the Welcome holds no secrets for any of our KeyPackages")]
    NoWelcomeForUs,
    /// A cryptographic or internal library operation failed.
    #[error("crypto failure: {0}")]
    Crypto(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Name of the exception class in `proto.errors`.
    fn class_name(&self) -> &'static str {
        match self {
            Error::Malformed(_) => "MalformedInput",
            Error::Invalid(_) => "InvalidMessage",
            Error::WrongEpoch(_) => "WrongEpoch",
            Error::NotAMember(_) => "NotAMember",
            Error::UnknownGroup => "UnknownGroup",
            Error::Storage(_) => "StorageFailure",
            Error::UnsupportedCiphersuite(_) => "UnsupportedCiphersuite",
            Error::PendingCommit(_) => "PendingCommit",
            Error::NoWelcomeForUs => "NoWelcomeForUs",
            Error::Crypto(_) => "MlsCryptoError",
        }
    }
}

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        Python::attach(|py| {
            let cls = py
                .import("proto.errors")
                .and_then(|m| m.getattr(err.class_name()))
                .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
            match cls {
                Ok(cls) => PyErr::from_type(cls, err.to_string()),
                Err(import_err) => {
                    let e = PyRuntimeError::new_err(format!(
                        "proto.errors unavailable while raising {}: {err}",
                        err.class_name()
                    ));
                    e.set_cause(py, Some(import_err));
                    e
                }
            }
        })
    }
}

/// What an OpenMLS error means for the caller; `None` from
/// [`Classify::kind`] means "use the direction's fallback".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Storage,
    Pending,
    NotAMember,
    NoWelcome,
    Suite,
    WrongEpoch,
    Invalid,
    Malformed,
}

impl Kind {
    fn error(self, msg: String) -> Error {
        match self {
            Kind::Storage => Error::Storage(msg),
            Kind::Pending => Error::PendingCommit(msg),
            Kind::NotAMember => Error::NotAMember(msg),
            Kind::NoWelcome => Error::NoWelcomeForUs,
            Kind::Suite => Error::UnsupportedCiphersuite(msg),
            Kind::WrongEpoch => Error::WrongEpoch(msg),
            Kind::Invalid => Error::Invalid(msg),
            Kind::Malformed => Error::Malformed(msg),
        }
    }
}

/// An OpenMLS error we can classify by its variants (nested errors are
/// classified recursively).
pub trait Classify: Display {
    fn kind(&self) -> Option<Kind>;
}

/// Decide which [`Error`] an OpenMLS error is from its variants; `fallback`
/// states what kind of operation failed (processing input vs. a local
/// operation) for variants that say nothing more specific.
pub fn classify<E: Classify>(err: &E, fallback: fn(String) -> Error) -> Error {
    let msg = err.to_string();
    match err.kind() {
        Some(kind) => kind.error(msg),
        None => fallback(msg),
    }
}

/// Convert an OpenMLS error of an operation on *incoming* data: anything not
/// recognised by [`classify`] is an invalid message.
pub fn remote<E: Classify>(err: E) -> Error {
    classify(&err, Error::Invalid)
}

/// Convert an OpenMLS error of a *local* operation: anything not recognised
/// by [`classify`] is a crypto/library failure.
pub fn local<E: Classify>(err: E) -> Error {
    classify(&err, Error::Crypto)
}

mod kinds {
    use super::{Classify, Kind};
    use openmls::error::LibraryError;
    use openmls::framing::errors::{MessageDecryptionError, MlsMessageError};
    use openmls::group::*;
    use openmls::prelude::{KeyPackageNewError, KeyPackageVerifyError};
    use openmls::treesync::errors::TreeSyncFromNodesError;

    impl Classify for LibraryError {
        fn kind(&self) -> Option<Kind> {
            None
        }
    }

    impl Classify for rusqlite::Error {
        fn kind(&self) -> Option<Kind> {
            Some(Kind::Storage)
        }
    }

    impl Classify for MlsMessageError {
        fn kind(&self) -> Option<Kind> {
            match self {
                MlsMessageError::UnableToDecode => Some(Kind::Malformed),
                _ => None,
            }
        }
    }

    impl Classify for TreeSyncFromNodesError {
        fn kind(&self) -> Option<Kind> {
            None
        }
    }

    impl Classify for MlsGroupStateError {
        fn kind(&self) -> Option<Kind> {
            match self {
                MlsGroupStateError::UseAfterEviction => Some(Kind::NotAMember),
                MlsGroupStateError::PendingCommit | MlsGroupStateError::PendingProposal => {
                    Some(Kind::Pending)
                }
                _ => None,
            }
        }
    }

    impl Classify for KeyPackageVerifyError {
        fn kind(&self) -> Option<Kind> {
            Some(Kind::Invalid)
        }
    }

    impl Classify for KeyPackageNewError {
        fn kind(&self) -> Option<Kind> {
            match self {
                KeyPackageNewError::UnsupportedCiphersuite(_) => Some(Kind::Suite),
                KeyPackageNewError::StorageError => Some(Kind::Storage),
                _ => None,
            }
        }
    }

    impl Classify for ExportSecretError {
        fn kind(&self) -> Option<Kind> {
            match self {
                ExportSecretError::GroupStateError(e) => e.kind(),
                _ => None,
            }
        }
    }

    impl Classify for ExportGroupInfoError {
        fn kind(&self) -> Option<Kind> {
            match self {
                ExportGroupInfoError::GroupStateError(e) => e.kind(),
                _ => None,
            }
        }
    }

    impl Classify for CreateMessageError {
        fn kind(&self) -> Option<Kind> {
            match self {
                CreateMessageError::GroupStateError(e) => e.kind(),
                _ => None,
            }
        }
    }

    impl Classify for MessageDecryptionError {
        fn kind(&self) -> Option<Kind> {
            match self {
                MessageDecryptionError::MalformedContent => Some(Kind::Malformed),
                _ => Some(Kind::Invalid),
            }
        }
    }

    impl Classify for ValidationError {
        fn kind(&self) -> Option<Kind> {
            match self {
                ValidationError::WrongEpoch | ValidationError::NoPastEpochData => {
                    Some(Kind::WrongEpoch)
                }
                ValidationError::UnknownMember => Some(Kind::NotAMember),
                ValidationError::UnableToDecrypt(e) => e.kind(),
                ValidationError::LibraryError(_) => None,
                _ => Some(Kind::Invalid),
            }
        }
    }

    impl Classify for StageCommitError {
        fn kind(&self) -> Option<Kind> {
            match self {
                StageCommitError::EpochMismatch => Some(Kind::WrongEpoch),
                StageCommitError::LibraryError(_) => None,
                _ => Some(Kind::Invalid),
            }
        }
    }

    impl Classify for CreateCommitError {
        fn kind(&self) -> Option<Kind> {
            None
        }
    }

    impl<E: std::error::Error> Classify for MergeCommitError<E> {
        fn kind(&self) -> Option<Kind> {
            match self {
                MergeCommitError::StorageError(_) => Some(Kind::Storage),
                _ => None,
            }
        }
    }

    impl<E: std::error::Error> Classify for CommitBuilderStageError<E> {
        fn kind(&self) -> Option<Kind> {
            match self {
                CommitBuilderStageError::KeyStoreError(_) => Some(Kind::Storage),
                _ => None,
            }
        }
    }

    impl<E: std::error::Error> Classify for MergePendingCommitError<E> {
        fn kind(&self) -> Option<Kind> {
            match self {
                MergePendingCommitError::MlsGroupStateError(e) => e.kind(),
                MergePendingCommitError::MergeCommitError(e) => e.kind(),
            }
        }
    }

    impl<E: std::error::Error> Classify for ProcessMessageError<E> {
        fn kind(&self) -> Option<Kind> {
            match self {
                ProcessMessageError::StorageError(_) => Some(Kind::Storage),
                ProcessMessageError::ValidationError(e) => e.kind(),
                ProcessMessageError::GroupStateError(e) => e.kind(),
                ProcessMessageError::InvalidCommit(e) => e.kind(),
                ProcessMessageError::LibraryError(_) => None,
                _ => Some(Kind::Invalid),
            }
        }
    }

    /// The commit-producing operations share one shape.
    macro_rules! commit_op {
        ($t:ident) => {
            impl<E: std::error::Error> Classify for $t<E> {
                fn kind(&self) -> Option<Kind> {
                    match self {
                        $t::StorageError(_) => Some(Kind::Storage),
                        $t::GroupStateError(e) => e.kind(),
                        $t::CreateCommitError(e) => e.kind(),
                        $t::CommitBuilderStageError(e) => e.kind(),
                        _ => None,
                    }
                }
            }
        };
    }
    commit_op!(AddMembersError);
    commit_op!(SelfUpdateError);
    commit_op!(CommitToPendingProposalsError);

    impl<E: std::error::Error> Classify for RemoveMembersError<E> {
        fn kind(&self) -> Option<Kind> {
            match self {
                RemoveMembersError::StorageError(_) => Some(Kind::Storage),
                RemoveMembersError::GroupStateError(e) => e.kind(),
                RemoveMembersError::CreateCommitError(e) => e.kind(),
                RemoveMembersError::CommitBuilderStageError(e) => e.kind(),
                RemoveMembersError::UnknownMember => Some(Kind::NotAMember),
                _ => None,
            }
        }
    }

    impl<E: std::error::Error> Classify for LeaveGroupError<E> {
        fn kind(&self) -> Option<Kind> {
            match self {
                LeaveGroupError::StorageError(_) => Some(Kind::Storage),
                LeaveGroupError::GroupStateError(e) => e.kind(),
                _ => None,
            }
        }
    }

    impl<E: std::error::Error> Classify for NewGroupError<E> {
        fn kind(&self) -> Option<Kind> {
            match self {
                NewGroupError::StorageError(_) => Some(Kind::Storage),
                NewGroupError::UnsupportedCiphersuite(_) => Some(Kind::Suite),
                NewGroupError::GroupAlreadyExists => Some(Kind::Storage),
                NewGroupError::NoMatchingKeyPackage => Some(Kind::NoWelcome),
                _ => None,
            }
        }
    }

    impl<E: std::error::Error> Classify for WelcomeError<E> {
        fn kind(&self) -> Option<Kind> {
            match self {
                WelcomeError::StorageError(_) => Some(Kind::Storage),
                WelcomeError::NoMatchingKeyPackage | WelcomeError::NoMatchingEncryptionKey => {
                    Some(Kind::NoWelcome)
                }
                WelcomeError::CiphersuiteMismatch | WelcomeError::UnsupportedCiphersuite(_) => {
                    Some(Kind::Suite)
                }
                WelcomeError::MalformedWelcomeMessage | WelcomeError::NotAWelcomeMessage => {
                    Some(Kind::Malformed)
                }
                WelcomeError::GroupAlreadyExists => Some(Kind::Storage),
                WelcomeError::LibraryError(_) => None,
                _ => Some(Kind::Invalid),
            }
        }
    }

    impl<E: std::error::Error> Classify for ExternalCommitBuilderError<E> {
        fn kind(&self) -> Option<Kind> {
            match self {
                ExternalCommitBuilderError::StorageError(_) => Some(Kind::Storage),
                ExternalCommitBuilderError::UnsupportedCiphersuite(_) => Some(Kind::Suite),
                ExternalCommitBuilderError::InvalidProposal(e) => e.kind(),
                ExternalCommitBuilderError::LibraryError(_) => None,
                _ => Some(Kind::Invalid),
            }
        }
    }

    impl<E: std::error::Error> Classify for ExternalCommitBuilderFinalizeError<E> {
        fn kind(&self) -> Option<Kind> {
            match self {
                ExternalCommitBuilderFinalizeError::StorageError(_) => Some(Kind::Storage),
                ExternalCommitBuilderFinalizeError::MergeCommitError(e) => e.kind(),
                _ => None,
            }
        }
    }
}

impl From<tls_codec::Error> for Error {
    fn from(err: tls_codec::Error) -> Self {
        Error::Malformed(err.to_string())
    }
}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        Error::Storage(err.to_string())
    }
}

impl From<openmls_traits::types::CryptoError> for Error {
    fn from(err: openmls_traits::types::CryptoError) -> Self {
        Error::Crypto(format!("{err:?}"))
    }
}

impl From<crate::codec::CodecError> for Error {
    fn from(err: crate::codec::CodecError) -> Self {
        Error::Storage(err.to_string())
    }
}

impl From<openmls::framing::errors::MlsMessageError> for Error {
    fn from(err: openmls::framing::errors::MlsMessageError) -> Self {
        local(err)
    }
}
