//! Welcomes that scale: the ratchet tree travels separately (sealed under the
//! new epoch's exporter, so the node that stores it cannot read it), and a
//! Welcome for many joiners splits into the part they share (the encrypted
//! GroupInfo) and one small `EncryptedGroupSecrets` per joiner
//! (RFC 9420 §12.4.3.1).
//!
//! Wire formats (all derived from RFC 9420 encodings, nothing new on the MLS
//! wire):
//!
//! * *common part*: an ordinary `MLSMessage(Welcome)` whose `secrets` vector
//!   is empty: `version || wire_format || cipher_suite || 0x00 ||
//!   encrypted_group_info<V>`.
//! * *secrets part*: one TLS-encoded `EncryptedGroupSecrets`
//!   (`KeyPackageRef new_member; HPKECiphertext encrypted_group_secrets`).
//! * *sealed tree*: `0x01 || nonce (24) || XChaCha20-Poly1305(key, nonce,
//!   aad, RatchetTree)` with `key = MLS-Exporter(TREE_LABEL, "", 32)` of the
//!   epoch the tree belongs to and `aad = TREE_LABEL || group_id<V> ||
//!   epoch (u64)`.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _, Size as _};
use openmls::prelude::*;
use openmls::treesync::RatchetTree;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::parse::{check_size, parse_message};

/// Exporter label of the ratchet-tree sealing key.
pub const TREE_LABEL: &str = "quicnprotochat ratchet tree v1";
/// Format byte of a sealed whole tree (a delta is `0x02`, `tree_delta.rs`).
pub const TREE_FORMAT: u8 = 1;
const NONCE_LEN: usize = 24;
/// `version (2) || wire_format (2) || cipher_suite (2)`.
const WELCOME_HEADER_LEN: usize = 6;

/// Parse `data` as an `MLSMessage(Welcome)`.
pub fn parse_welcome(data: &[u8]) -> Result<Welcome> {
    match parse_message(data)?.extract() {
        MlsMessageBodyIn::Welcome(w) => Ok(w),
        _ => Err(Error::Malformed("not a Welcome message".into())),
    }
}

/// A split Welcome: the common part and `(KeyPackageRef, secrets part)` per
/// joiner.
pub type WelcomeParts = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

/// Split a Welcome into its common part and one secrets part per joiner,
/// keyed by the joiner's KeyPackageRef.
pub fn split(data: &[u8]) -> Result<WelcomeParts> {
    let welcome = parse_welcome(data)?;
    let secrets: Vec<EncryptedGroupSecrets> = welcome.secrets().to_vec();
    // `parse_message` accepted exactly these bytes, so the layout is
    // header || secrets<V> || encrypted_group_info<V>.
    let secrets_len = secrets.tls_serialized_len();
    let rest = data
        .get(WELCOME_HEADER_LEN + secrets_len..)
        .ok_or_else(|| Error::Malformed("Welcome shorter than its secrets".into()))?;
    let mut common = Vec::with_capacity(WELCOME_HEADER_LEN + 1 + rest.len());
    common.extend_from_slice(&data[..WELCOME_HEADER_LEN]);
    common.push(0); // empty secrets<V>
    common.extend_from_slice(rest);
    // The common part must itself be a valid Welcome (catches any layout
    // surprise instead of handing out bytes nobody can join from).
    let check = parse_welcome(&common)?;
    if !check.secrets().is_empty() {
        return Err(Error::Crypto("split Welcome kept secrets".into()));
    }
    let mut parts = Vec::with_capacity(secrets.len());
    for egs in &secrets {
        parts.push((
            egs.new_member().as_slice().to_vec(),
            egs.tls_serialize_detached()?,
        ));
    }
    Ok((common, parts))
}

/// Rebuild a one-joiner Welcome from the common part and a secrets part.
pub fn assemble(common: &[u8], secrets: &[u8]) -> Result<Welcome> {
    let shared = parse_welcome(common)?;
    if !shared.secrets().is_empty() {
        return Err(Error::Malformed(
            "the common part of a Welcome carries no secrets".into(),
        ));
    }
    check_size(secrets)?;
    let egs = EncryptedGroupSecrets::tls_deserialize_exact(secrets)?;
    let one = vec![egs].tls_serialize_detached()?;
    let mut data = Vec::with_capacity(common.len() + one.len());
    data.extend_from_slice(&common[..WELCOME_HEADER_LEN]);
    data.extend_from_slice(&one);
    data.extend_from_slice(&common[WELCOME_HEADER_LEN + 1..]);
    parse_welcome(&data)
}

/// AAD of a sealed whole tree.
pub fn tree_aad(group_id: &[u8], epoch: u64) -> Result<Vec<u8>> {
    let mut aad = TREE_LABEL.as_bytes().to_vec();
    aad.extend_from_slice(&VLBytes::new(group_id.to_vec()).tls_serialize_detached()?);
    aad.extend_from_slice(&epoch.to_be_bytes());
    Ok(aad)
}

fn cipher(key: &[u8]) -> Result<XChaCha20Poly1305> {
    XChaCha20Poly1305::new_from_slice(key)
        .map_err(|_| Error::Crypto("ratchet tree key length".into()))
}

/// `format || nonce || XChaCha20-Poly1305(key, nonce, aad, plain)`.
pub fn seal(format: u8, plain: &[u8], key: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ct = cipher(key)?
        .encrypt(&nonce, Payload { msg: plain, aad })
        .map_err(|_| Error::Crypto("ratchet tree encryption failed".into()))?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
    out.push(format);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Open what [`seal`] made; `what` names it in errors. A wrong format byte
/// or a too short input is `MalformedInput`, a wrong key, AAD (group,
/// epoch) or tampering `InvalidMessage`.
pub fn open_sealed(
    format: u8,
    sealed: &[u8],
    key: &[u8],
    aad: &[u8],
    what: &str,
) -> Result<Zeroizing<Vec<u8>>> {
    if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != format {
        return Err(Error::Malformed(format!("not {what} (sealed)")));
    }
    let nonce = XNonce::from_slice(&sealed[1..1 + NONCE_LEN]);
    let plain = cipher(key)?
        .decrypt(
            nonce,
            Payload {
                msg: &sealed[1 + NONCE_LEN..],
                aad,
            },
        )
        .map_err(|_| {
            Error::Invalid(format!(
                "{what} does not open for this Welcome (other group or epoch, out of order, or tampered)"
            ))
        })?;
    Ok(Zeroizing::new(plain))
}

/// Seal a ratchet tree of `(group_id, epoch)` under `key` (the epoch's
/// exporter secret for [`TREE_LABEL`]).
pub fn seal_tree(tree: &RatchetTree, key: &[u8], group_id: &[u8], epoch: u64) -> Result<Vec<u8>> {
    let plain = Zeroizing::new(tree.tls_serialize_detached()?);
    seal(TREE_FORMAT, &plain, key, &tree_aad(group_id, epoch)?)
}
