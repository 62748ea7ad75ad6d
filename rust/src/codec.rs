//! The storage codec: every value and every lookup key that
//! `openmls_sqlite_storage` writes passes through [`EncryptingCodec`], so the
//! SQLite file holds only ciphertext.
//!
//! Format of a stored blob: `0x01 || nonce (24) || XChaCha20-Poly1305(msgpack)`.
//! The plaintext is MessagePack with named fields: self-describing like the
//! JSON OpenMLS uses by default (some OpenMLS types need `deserialize_any`),
//! but byte vectors are written as bin blobs, so state is a fraction of the
//! size of JSON and much faster to write (see docs/MLS.md).
//!
//! * Values (key pairs, group secrets, trees...) get a fresh random nonce.
//! * Lookup keys (group id, key-package/proposal hash refs, HPKE public keys,
//!   epochs, PSK ids) must encrypt the same way every time, or SQLite could
//!   not find the row again. Their nonce is HMAC-SHA256(nonce key, plaintext)
//!   truncated to 24 bytes (the SIV construction): deterministic, still
//!   authenticated, and it only reveals that two rows share a key.
//!
//! `Codec` is a trait of static functions (no `&self`), so the key cannot live
//! in the codec value. The client installs its key in a thread-local slot for
//! the duration of each operation ([`KeyScope`]); without one the codec fails
//! cleanly with a storage error instead of writing plaintext.

use std::any::type_name;
use std::cell::{Cell, RefCell};
use std::sync::Arc;

use chacha20poly1305::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::{de::DeserializeOwned, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

const FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Format byte + nonce.
const HEADER_LEN: usize = 1 + NONCE_LEN;
const AAD: &[u8] = b"quicnprotochat mls storage v1";

/// Last path segments of the OpenMLS types used as lookup keys.
const LOOKUP_KEY_TYPES: &[&str] = &[
    "GroupId",
    "HashReference",
    "EncryptionKey",
    "GroupEpoch",
    "Psk",
];

/// Keys derived from the 32-byte storage key given by Python.
pub struct CodecKeys {
    aead: XChaCha20Poly1305,
    nonce_key: Zeroizing<[u8; 32]>,
}

impl CodecKeys {
    /// Derive the AEAD key and the deterministic-nonce key from the storage key.
    pub fn derive(storage_key: &[u8; 32]) -> Self {
        let sub = |label: &[u8]| -> Zeroizing<[u8; 32]> {
            // HMAC accepts keys of any length; new_from_slice cannot fail here.
            let mut out = Zeroizing::new([0u8; 32]);
            if let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(storage_key) {
                mac.update(label);
                out.copy_from_slice(&mac.finalize().into_bytes());
            }
            out
        };
        let aead_key = sub(b"qpc-mls-storage aead v1");
        let nonce_key = sub(b"qpc-mls-storage siv-nonce v1");
        CodecKeys {
            aead: XChaCha20Poly1305::new(aead_key.as_ref().into()),
            nonce_key,
        }
    }

    #[cfg(test)]
    pub fn seal(&self, plaintext: &[u8], deterministic: bool) -> Result<Vec<u8>, CodecError> {
        let mut buf = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        buf.resize(HEADER_LEN, 0);
        buf.extend_from_slice(plaintext);
        self.seal_in_place(buf, deterministic)
    }

    /// Encrypt `buf[HEADER_LEN..]` in place and fill in the header: no copy
    /// of the (possibly multi-megabyte) plaintext, and no plaintext buffer
    /// left to wipe. On error the buffer is wiped.
    fn seal_in_place(&self, mut buf: Vec<u8>, deterministic: bool) -> Result<Vec<u8>, CodecError> {
        let nonce: XNonce = if deterministic {
            let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(self.nonce_key.as_ref()) {
                Ok(mac) => mac,
                Err(_) => {
                    buf.zeroize();
                    return Err(CodecError("nonce key"));
                }
            };
            mac.update(&buf[HEADER_LEN..]);
            let tag = mac.finalize().into_bytes();
            XNonce::clone_from_slice(&tag[..NONCE_LEN])
        } else {
            XChaCha20Poly1305::generate_nonce(&mut OsRng)
        };
        let tag = match self
            .aead
            .encrypt_in_place_detached(&nonce, AAD, &mut buf[HEADER_LEN..])
        {
            Ok(tag) => tag,
            Err(_) => {
                buf.zeroize();
                return Err(CodecError("encryption failed"));
            }
        };
        buf[0] = FORMAT_VERSION;
        buf[1..HEADER_LEN].copy_from_slice(&nonce);
        buf.extend_from_slice(&tag);
        Ok(buf)
    }

    pub fn open(&self, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, CodecError> {
        if blob.len() < HEADER_LEN + TAG_LEN || blob[0] != FORMAT_VERSION {
            return Err(CodecError("not an encrypted record"));
        }
        let nonce = XNonce::from_slice(&blob[1..HEADER_LEN]);
        let (ct, tag) = blob[HEADER_LEN..].split_at(blob.len() - HEADER_LEN - TAG_LEN);
        let mut plain = Zeroizing::new(ct.to_vec());
        self.aead
            .decrypt_in_place_detached(nonce, AAD, &mut plain, Tag::from_slice(tag))
            .map_err(|_| CodecError("decryption failed (wrong storage key or corrupted file)"))?;
        Ok(plain)
    }
}

/// Codec error; carries no data from the record.
#[derive(Debug, Clone, Copy)]
pub struct CodecError(&'static str);

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "storage codec: {}", self.0)
    }
}

impl std::error::Error for CodecError {}

thread_local! {
    static ACTIVE: RefCell<Option<Arc<CodecKeys>>> = const { RefCell::new(None) };
}

/// Installs a client's keys for the current thread; restores the previous
/// keys when dropped (scopes nest).
pub struct KeyScope {
    previous: Option<Arc<CodecKeys>>,
}

impl KeyScope {
    pub fn enter(keys: &Arc<CodecKeys>) -> Self {
        let previous = ACTIVE.with(|slot| slot.replace(Some(Arc::clone(keys))));
        KeyScope { previous }
    }
}

impl Drop for KeyScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        ACTIVE.with(|slot| {
            slot.replace(previous);
        });
    }
}

fn with_active<R>(f: impl FnOnce(&CodecKeys) -> Result<R, CodecError>) -> Result<R, CodecError> {
    f(active_keys()?.as_ref())
}

fn active_keys() -> Result<Arc<CodecKeys>, CodecError> {
    ACTIVE.with(|slot| match slot.borrow().as_ref() {
        Some(keys) => Ok(Arc::clone(keys)),
        None => Err(CodecError("no storage key installed for this thread")),
    })
}

thread_local! {
    /// Set while an application message is decrypted with its
    /// message-secrets write deferred (see [`DeferScope`]).
    static DEFER: Cell<bool> = const { Cell::new(false) };
    /// Set when a write was deferred in the current scope.
    static DEFERRED: Cell<bool> = const { Cell::new(false) };
}

/// The write OpenMLS makes after every decrypted message: the whole
/// `MessageSecretsStore` (secret tree plus, per kept past epoch, every
/// member's keys: MBs in large hybrid groups; openmls issue 2080).
fn is_message_secrets<T: ?Sized>() -> bool {
    let name = type_name::<T>().trim_start_matches('&');
    name.rsplit("::").next() == Some("MessageSecretsStore")
}

/// Within this scope the codec encodes the message-secrets entity as an
/// empty blob, which the `qpc_deferred_write` trigger (`provider.rs`) drops:
/// the row keeps its last written value and the in-memory group is ahead of
/// it until the next full write (`core::ClientCore` bounds and flushes).
pub struct DeferScope(());

impl DeferScope {
    pub fn enter() -> Self {
        DEFER.with(|d| d.set(true));
        DEFERRED.with(|d| d.set(false));
        DeferScope(())
    }

    /// Was a message-secrets write deferred in this scope?
    pub fn deferred(&self) -> bool {
        DEFERRED.with(|d| d.get())
    }
}

impl Drop for DeferScope {
    fn drop(&mut self) {
        DEFER.with(|d| d.set(false));
    }
}

fn is_lookup_key<T: ?Sized>() -> bool {
    let name = type_name::<T>().trim_start_matches('&');
    let name = name.rsplit("::").next().unwrap_or(name);
    LOOKUP_KEY_TYPES.contains(&name)
}

/// The `openmls_sqlite_storage` codec that encrypts everything it encodes.
#[derive(Default)]
pub struct EncryptingCodec;

impl openmls_sqlite_storage::Codec for EncryptingCodec {
    type Error = CodecError;

    fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, Self::Error> {
        if DEFER.with(|d| d.get()) && is_message_secrets::<T>() {
            DEFERRED.with(|d| d.set(true));
            return Ok(Vec::new());
        }
        let keys = active_keys()?;
        keys.seal_in_place(encode(value)?, is_lookup_key::<T>())
    }

    fn from_slice<T: DeserializeOwned>(slice: &[u8]) -> Result<T, Self::Error> {
        let plain = with_active(|keys| keys.open(slice))?;
        decode(&plain)
    }
}

/// The serializer's output buffer. rmp-serde writes a byte vector in `bin`
/// mode one byte per `write` call; `Vec`'s own `Write` goes through
/// `extend_from_slice` (a `memcpy` call) for each, this pushes.
struct Sink(Vec<u8>);

impl std::io::Write for Sink {
    #[inline(always)]
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let [byte] = data {
            self.0.push(*byte);
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(data.len())
    }

    #[inline(always)]
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.write(data).map(|_| ())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// MessagePack of `value`, after `HEADER_LEN` zero bytes (room for the
/// header, so the codec can encrypt in place). Wiped on error.
fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    // Named fields (like JSON, robust to added fields); `Vec<u8>`/slices as
    // MessagePack bin (one length + raw bytes) instead of one integer per
    // byte. rmp-serde reads bin back as a sequence for `Vec<u8>` visitors.
    let mut sink = Sink(Vec::with_capacity(size_hint::<T>()));
    sink.0.resize(HEADER_LEN, 0);
    let mut ser = rmp_serde::Serializer::new(&mut sink)
        .with_struct_map()
        .with_bytes(rmp_serde::config::BytesMode::ForceIterables);
    if value.serialize(&mut ser).is_err() {
        sink.0.zeroize();
        return Err(CodecError("serialization failed"));
    }
    remember_size::<T>(sink.0.len());
    Ok(sink.0)
}

thread_local! {
    /// Last encoded size per value type: the multi-megabyte entities of big
    /// groups (tree, message secrets) are then allocated once instead of
    /// grown (and copied) through a dozen reallocations.
    static SIZE_HINTS: RefCell<std::collections::HashMap<&'static str, usize>> =
        RefCell::new(std::collections::HashMap::new());
}

fn size_hint<T: ?Sized>() -> usize {
    let last = SIZE_HINTS.with(|h| h.borrow().get(type_name::<T>()).copied());
    // Room for the header, growth, and the AEAD tag.
    last.map_or(1024, |n| n + n / 16 + HEADER_LEN + TAG_LEN)
}

fn remember_size<T: ?Sized>(len: usize) {
    SIZE_HINTS.with(|h| {
        h.borrow_mut().insert(type_name::<T>(), len);
    });
}

fn decode<T: DeserializeOwned>(plain: &[u8]) -> Result<T, CodecError> {
    rmp_serde::from_slice(plain).map_err(|_| CodecError("deserialization failed"))
}

/// Encode a value of our own tables with the active keys (random nonce).
pub fn seal_record<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let keys = active_keys()?;
    keys.seal_in_place(encode(value)?, false)
}

/// Decode a value of our own tables with the active keys.
pub fn open_record<T: DeserializeOwned>(blob: &[u8]) -> Result<T, CodecError> {
    let plain = with_active(|keys| keys.open(blob))?;
    decode(&plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openmls::prelude::{GroupEpoch, GroupId};

    #[test]
    fn lookup_keys_are_recognised() {
        assert!(is_lookup_key::<&GroupId>());
        assert!(is_lookup_key::<&&GroupEpoch>());
        assert!(is_lookup_key::<openmls::prelude::KeyPackageRef>());
        assert!(!is_lookup_key::<Vec<u8>>());
    }

    #[test]
    fn round_trip_and_determinism() {
        let keys = Arc::new(CodecKeys::derive(&[7u8; 32]));
        let _scope = KeyScope::enter(&keys);
        let a = keys.seal(b"abc", true).unwrap();
        let b = keys.seal(b"abc", true).unwrap();
        let c = keys.seal(b"abc", false).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(&keys.open(&c).unwrap()[..], b"abc");
        let other = CodecKeys::derive(&[8u8; 32]);
        assert!(other.open(&a).is_err());
    }
}
