//! One error enum for the whole binding, converted in from every OpenMLS,
//! storage and codec error and out to the exception classes that
//! `proto/errors.py` defines. Rust never defines exception classes.
//!
//! OpenMLS nests its errors several levels deep (`AddMembersError` ->
//! `CreateCommitError` -> `MlsGroupStateError::PendingCommit`, ...). Rather than
//! hand-writing a match for every nesting, [`classify`] looks at the variant
//! names in the error's `Debug` form. The `Debug` text is used only for that
//! decision; the message passed to Python is the `Display` text, which never
//! contains key material or message content.

use std::fmt::{Debug, Display};

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

/// Decide which [`Error`] an OpenMLS error is, from its variant names.
///
/// `fallback` is used when no more specific variant is recognised; it states
/// what kind of operation failed (processing input vs. a local operation).
pub fn classify<E: Debug + Display>(err: &E, fallback: fn(String) -> Error) -> Error {
    let debug = format!("{err:?}");
    let msg = err.to_string();
    let has = |needle: &str| debug.contains(needle);
    if has("StorageError") || has("SqliteFailure") || has("Codec") {
        Error::Storage(msg)
    } else if (has("PendingCommit") && !has("NoPendingCommit")) || has("PendingProposal") {
        Error::PendingCommit(msg)
    } else if has("UseAfterEviction") || has("UnknownMember") {
        Error::NotAMember(msg)
    } else if has("NoMatchingKeyPackage") || has("NoMatchingEncryptionKey") {
        Error::NoWelcomeForUs
    } else if has("UnsupportedCiphersuite") || has("CiphersuiteMismatch") {
        Error::UnsupportedCiphersuite(msg)
    } else if has("WrongEpoch") || has("NoPastEpochData") {
        Error::WrongEpoch(msg)
    } else if has("WrongGroupId") {
        Error::Invalid(msg)
    } else if has("TlsCodec")
        || has("DecodingError")
        || has("EndOfStream")
        || has("InvalidVectorLength")
        || has("TrailingData")
        || has("UnknownValue")
        || has("MalformedMessage")
    {
        Error::Malformed(msg)
    } else {
        fallback(msg)
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

/// Convert an OpenMLS error of an operation on *incoming* data: anything not
/// recognised by [`classify`] is an invalid message.
pub fn remote<E: Debug + Display>(err: E) -> Error {
    classify(&err, Error::Invalid)
}

/// Convert an OpenMLS error of a *local* operation: anything not recognised
/// by [`classify`] is a crypto/library failure.
pub fn local<E: Debug + Display>(err: E) -> Error {
    classify(&err, Error::Crypto)
}

impl From<openmls::framing::errors::MlsMessageError> for Error {
    fn from(err: openmls::framing::errors::MlsMessageError) -> Self {
        local(err)
    }
}
