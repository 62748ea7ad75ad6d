//! `proto._mls`: the OpenMLS binding of quicnprotochat.
//!
//! The bridging layer is not API: Python code imports `proto.mls`, which
//! re-exports these names with documentation. Exceptions are the classes of
//! `proto.errors`, raised from Rust through [`error::Error`].

mod client;
mod codec;
mod core;
mod error;
mod group;
mod parse;
mod provider;
mod receipt;
mod tree_delta;
mod types;
mod welcome;
mod wire;

use pyo3::prelude::*;

use crate::core::{parse_message, run_stateless, validate_key_package};
use crate::types::{pybytes, KeyPackageInfo, MessageInfo};

/// Parse and validate an MLS-message-wrapped KeyPackage.
#[pyfunction]
fn parse_key_package(py: Python<'_>, data: &[u8]) -> PyResult<Py<KeyPackageInfo>> {
    let (cs, identity, sig, hash_ref, last_resort) = run_stateless(py, || {
        let crypto = provider::QpcProvider::crypto_only()?;
        let kp = validate_key_package(&crypto, data)?;
        let hash_ref = kp.hash_ref(&crypto).map_err(error::local)?;
        Ok((
            u16::from(kp.ciphersuite()),
            core::identity_of(kp.leaf_node().credential()),
            kp.leaf_node().signature_key().as_slice().to_vec(),
            hash_ref.as_slice().to_vec(),
            kp.last_resort(),
        ))
    })?;
    Py::new(
        py,
        KeyPackageInfo {
            ciphersuite: cs,
            identity: pybytes(py, &identity),
            signature_key: pybytes(py, &sig),
            hash_ref: pybytes(py, &hash_ref),
            last_resort,
        },
    )
}

/// Read the cleartext framing of an MLS message (kind, group id, epoch).
#[pyfunction]
fn message_info(py: Python<'_>, data: &[u8]) -> PyResult<Py<MessageInfo>> {
    use openmls::prelude::*;
    let (kind, gid, epoch, ct) = run_stateless(py, || {
        let msg = parse_message(data)?;
        let kind = match msg.wire_format() {
            WireFormat::PublicMessage => "public_message",
            WireFormat::PrivateMessage => "private_message",
            WireFormat::Welcome => "welcome",
            WireFormat::GroupInfo => "group_info",
            WireFormat::KeyPackage => "key_package",
            #[allow(unreachable_patterns)]
            _ => "other",
        };
        if matches!(kind, "public_message" | "private_message") {
            let pm = msg
                .try_into_protocol_message()
                .map_err(|_| error::Error::Malformed("not a protocol message".into()))?;
            let ct = match pm.content_type() {
                ContentType::Application => "application",
                ContentType::Proposal => "proposal",
                ContentType::Commit => "commit",
            };
            Ok((
                kind,
                Some(pm.group_id().as_slice().to_vec()),
                Some(pm.epoch().as_u64()),
                Some(ct),
            ))
        } else {
            Ok((kind, None, None, None))
        }
    })?;
    Py::new(
        py,
        MessageInfo {
            kind: kind.to_string(),
            group_id: gid.map(|g| pybytes(py, &g)),
            epoch,
            content_type: ct.map(str::to_string),
        },
    )
}

/// Split a Welcome into `(common, {key_package_ref: secrets})`.
pub(crate) fn split_welcome_py<'py>(
    py: Python<'py>,
    welcome: &[u8],
) -> PyResult<(Py<pyo3::types::PyBytes>, Bound<'py, pyo3::types::PyDict>)> {
    let (common, parts) = run_stateless(py, || welcome::split(welcome))?;
    let dict = pyo3::types::PyDict::new(py);
    for (hash_ref, secrets) in parts {
        dict.set_item(pybytes(py, &hash_ref), pybytes(py, &secrets))?;
    }
    Ok((pybytes(py, &common), dict))
}

/// Split a Welcome for delivery by reference: the part every joiner needs
/// (a Welcome with no secrets: the encrypted GroupInfo) and, per joiner
/// (keyed by KeyPackageRef, `KeyPackageInfo.hash_ref`), its own
/// EncryptedGroupSecrets.
#[pyfunction]
fn split_welcome<'py>(
    py: Python<'py>,
    welcome: &[u8],
) -> PyResult<(Py<pyo3::types::PyBytes>, Bound<'py, pyo3::types::PyDict>)> {
    split_welcome_py(py, welcome)
}

/// Validate the framing and every pointer of one Cap'n Proto message
/// (see `wire.rs`); returns the words reachable from the root.
///
/// Raises ValueError on any defect; never panics.
#[pyfunction]
fn capnp_validate(data: &[u8], traversal_limit_words: u64, nesting_limit: i32) -> PyResult<u64> {
    wire::validate(data, traversal_limit_words, nesting_limit)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
}

/// Ciphersuite code points this build supports (default first).
#[pyfunction]
fn supported_ciphersuites() -> Vec<u16> {
    core::SUPPORTED_CIPHERSUITES.to_vec()
}

/// The OpenMLS version this module was built against.
#[pyfunction]
fn openmls_version() -> &'static str {
    "0.9.2"
}

#[pymodule]
mod _mls {
    #[pymodule_export]
    use super::client::Client;
    #[pymodule_export]
    use super::group::Group;
    #[pymodule_export]
    use super::types::{
        ApplicationMessage, CommitMerged, CommitOutput, KeyPackageInfo, Member, MessageInfo,
        OwnMessage, ProposalStored,
    };
    #[pymodule_export]
    use super::{
        capnp_validate, message_info, openmls_version, parse_key_package, split_welcome,
        supported_ciphersuites,
    };

    #[pymodule_export]
    const CIPHERSUITE_HYBRID: u16 = super::core::CIPHERSUITE_HYBRID;
    #[pymodule_export]
    const CIPHERSUITE_CLASSICAL: u16 = super::core::CIPHERSUITE_CLASSICAL;
    #[pymodule_export]
    const DEFAULT_CIPHERSUITE: u16 = super::core::DEFAULT_CIPHERSUITE;
    #[pymodule_export]
    const MAX_PAST_EPOCHS: usize = super::core::MAX_PAST_EPOCHS;
    #[pymodule_export]
    const MAX_MESSAGE_BYTES: usize = super::core::MAX_MESSAGE_BYTES;
}
