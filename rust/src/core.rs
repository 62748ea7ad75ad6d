//! The state behind a `Client`: provider, signing key, loaded groups.
//! Everything here is plain Rust; `client.rs`/`group.rs` are the Python face.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use openmls::prelude::*;
use openmls_traits::signatures::{Signer, SignerError};
use pyo3::prelude::*;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::codec::{open_record, seal_record, CodecKeys, KeyScope};
use crate::error::{local, remote, Error, Result};
pub use crate::parse::{parse_message, MAX_MESSAGE_BYTES};
use crate::provider::{Db, QpcProvider};

/// Hybrid X25519 + ML-KEM-768 (X-Wing KEM), AES-128-GCM, SHA-256, Ed25519.
pub const CIPHERSUITE_HYBRID: u16 = 0x004F;
/// RFC 9420 MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519.
pub const CIPHERSUITE_CLASSICAL: u16 = 0x0001;
pub const DEFAULT_CIPHERSUITE: u16 = CIPHERSUITE_HYBRID;
pub const SUPPORTED_CIPHERSUITES: [u16; 2] = [CIPHERSUITE_HYBRID, CIPHERSUITE_CLASSICAL];
/// Past epochs whose message secrets are kept so late messages still decrypt.
pub const MAX_PAST_EPOCHS: usize = 5;
/// Longest KeyPackage lifetime a caller may ask for (100 years; the default
/// is OpenMLS's 12 weeks).
pub const MAX_KEY_PACKAGE_LIFETIME_SECONDS: u64 = 100 * 365 * 24 * 3600;
/// Out-of-order tolerance of the sender ratchets (messages per sender).
const OUT_OF_ORDER_TOLERANCE: u32 = 32;
const MAXIMUM_FORWARD_DISTANCE: u32 = 1000;
/// Decrypted application messages whose message-secrets write may be
/// deferred in a row (per group); the next one writes the whole entity.
pub const MAX_DEFERRED_WRITES: u32 = 63;

/// Generations of our sender ratchet one send reservation stores ahead
/// (`ClientCore::encrypt_reserved`): one write of the message-secrets
/// entity per this many sends; after a crash receivers see a gap of at most
/// this many generations (within OpenMLS's maximum forward distance, 1000).
pub const SEND_RESERVE: u32 = 128;

/// Groups smaller than this write at every send even with `defer_write`:
/// their entity is small, and a reservation costs about one extra encrypt
/// per send (2 hybrid members: 0.66 ms deferred against 0.19 ms writing,
/// `bench/mls_receive.py`).
pub const RESERVE_MIN_MEMBERS: usize = 16;
/// Format version of our own client record.
const CLIENT_RECORD_VERSION: i64 = 1;

pub fn ciphersuite(code: u16) -> Result<Ciphersuite> {
    if !SUPPORTED_CIPHERSUITES.contains(&code) {
        return Err(Error::UnsupportedCiphersuite(format!("0x{code:04x}")));
    }
    Ciphersuite::try_from(code).map_err(|_| Error::UnsupportedCiphersuite(format!("0x{code:04x}")))
}

fn supported_suites() -> Vec<Ciphersuite> {
    SUPPORTED_CIPHERSUITES
        .iter()
        .filter_map(|c| Ciphersuite::try_from(*c).ok())
        .collect()
}

pub fn capabilities() -> Capabilities {
    Capabilities::new(
        None,
        Some(&supported_suites()),
        Some(&[ExtensionType::LastResort]),
        None,
        Some(&[CredentialType::Basic]),
    )
}

pub fn join_config() -> MlsGroupJoinConfig {
    join_config_with_tree(false)
}

/// Our join config; `tree_in_welcome` puts the ratchet tree into Welcomes
/// and GroupInfos (off by default: it travels separately, sealed).
pub fn join_config_with_tree(tree_in_welcome: bool) -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(tree_in_welcome)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .wire_format_policy(MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .sender_ratchet_configuration(SenderRatchetConfiguration::new(
            OUT_OF_ORDER_TOLERANCE,
            MAXIMUM_FORWARD_DISTANCE,
        ))
        .build()
}

fn create_config(cs: Ciphersuite) -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(cs)
        .use_ratchet_tree_extension(false)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .wire_format_policy(MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .sender_ratchet_configuration(SenderRatchetConfiguration::new(
            OUT_OF_ORDER_TOLERANCE,
            MAXIMUM_FORWARD_DISTANCE,
        ))
        .capabilities(capabilities())
        .build()
}

/// Parse and validate an MLS-message-wrapped KeyPackage.
pub fn validate_key_package(
    crypto: &impl openmls_traits::crypto::OpenMlsCrypto,
    data: &[u8],
) -> Result<KeyPackage> {
    let body = parse_message(data)?.extract();
    let MlsMessageBodyIn::KeyPackage(kp_in) = body else {
        return Err(Error::Malformed("not a KeyPackage message".into()));
    };
    let kp = kp_in
        .validate(crypto, ProtocolVersion::Mls10)
        .map_err(remote)?;
    let code: u16 = kp.ciphersuite().into();
    if !SUPPORTED_CIPHERSUITES.contains(&code) {
        return Err(Error::UnsupportedCiphersuite(format!("0x{code:04x}")));
    }
    Ok(kp)
}

pub fn identity_of(credential: &Credential) -> Vec<u8> {
    credential.serialized_content().to_vec()
}

/// Ed25519 signing key, backed by libcrux.
pub struct SigningKey {
    private: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl SigningKey {
    pub fn generate(provider: &QpcProvider) -> Result<Self> {
        let (private, public) = provider
            .crypto()
            .signature_key_gen(SignatureScheme::ED25519)?;
        let private = Zeroizing::new(private);
        Self::from_parts(&private, Some(&public))
    }

    /// From a raw 32-byte Ed25519 private key (seed); public key derived.
    pub fn from_parts(private: &[u8], public: Option<&[u8]>) -> Result<Self> {
        let mut sk = Zeroizing::new([0u8; 32]);
        if private.len() != 32 {
            return Err(Error::Crypto(
                "an Ed25519 private key is 32 bytes".to_string(),
            ));
        }
        sk.copy_from_slice(private);
        let mut pk = [0u8; 32];
        libcrux_ed25519::secret_to_public(&mut pk, &sk);
        if let Some(given) = public {
            if given != pk {
                return Err(Error::Storage(
                    "stored signature key pair is inconsistent".to_string(),
                ));
            }
        }
        Ok(SigningKey {
            private: sk,
            public: pk,
        })
    }

    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }
}

impl Signer for SigningKey {
    fn sign(&self, payload: &[u8]) -> std::result::Result<Vec<u8>, SignerError> {
        libcrux_ed25519::sign(payload, &self.private)
            .map(|s| s.to_vec())
            .map_err(|_| SignerError::SigningError)
    }

    fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

/// Our own record in the state file (encrypted like everything else).
#[derive(Serialize, Deserialize)]
struct ClientRecord {
    identity: Vec<u8>,
    signature_private: Vec<u8>,
    signature_public: Vec<u8>,
    default_ciphersuite: u16,
}

impl Drop for ClientRecord {
    fn drop(&mut self) {
        self.signature_private.zeroize();
    }
}

pub struct ClientCore {
    pub provider: QpcProvider,
    /// The same connection as the provider's storage (our own tables, and
    /// the per-operation transaction).
    pub db: Db,
    keys: Arc<CodecKeys>,
    pub signer: SigningKey,
    pub identity: Vec<u8>,
    pub default_ciphersuite: u16,
    groups: HashMap<Vec<u8>, MlsGroup>,
    /// Per group: decrypts since the message-secrets entity was last
    /// written (its stored value is that far behind the in-memory group).
    deferred: HashMap<Vec<u8>, u32>,
    /// Per group: sends that may still skip the message-secrets write,
    /// because the stored entity's own sender ratchet is at least that many
    /// generations ahead of the in-memory one (see `encrypt_reserved`).
    /// Any write of the group's entity from memory ends the reservation.
    reserve: HashMap<Vec<u8>, u32>,
}

pub type Shared = Arc<Mutex<Option<ClientCore>>>;

/// How many digests of our own sent handshake messages we remember.
const SENT_DIGESTS_KEPT: i64 = 1024;

fn meta_table(conn: &rusqlite::Connection) -> Result<()> {
    // qpc_sent holds SHA-256 digests of handshake messages we produced, so an
    // echo of our own commit (from an epoch we already left) is recognised.
    // A digest of ciphertext that went over the wire reveals nothing.
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS qpc_client (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            version INTEGER NOT NULL,
            record BLOB NOT NULL
        );
        CREATE TABLE IF NOT EXISTS qpc_sent (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            digest BLOB NOT NULL UNIQUE
        );",
    )?;
    conn.execute_batch(crate::receipt::SCHEMA)?;
    Ok(())
}

fn digest(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

fn storage_key(key: &[u8]) -> Result<Arc<CodecKeys>> {
    let arr: [u8; 32] = key
        .try_into()
        .map_err(|_| Error::Storage("the storage key must be exactly 32 bytes".into()))?;
    let arr = Zeroizing::new(arr);
    Ok(Arc::new(CodecKeys::derive(&arr)))
}

impl ClientCore {
    /// Create a new client in the file at `path` (which must not hold one).
    pub fn create(
        path: &str,
        key: &[u8],
        identity: &[u8],
        signature_key: Option<&[u8]>,
        default_ciphersuite: u16,
    ) -> Result<Self> {
        ciphersuite(default_ciphersuite)?;
        let keys = storage_key(key)?;
        let _scope = KeyScope::enter(&keys);
        let (provider, db) = QpcProvider::open(path)?;
        meta_table(&db)?;
        let signer = db.transaction(|| {
            let exists: i64 = db.query_row("SELECT count(*) FROM qpc_client", [], |r| r.get(0))?;
            if exists != 0 {
                return Err(Error::Storage(
                    "this state file already holds a client; use Client.open".into(),
                ));
            }
            let signer = match signature_key {
                Some(sk) => SigningKey::from_parts(sk, None)?,
                None => SigningKey::generate(&provider)?,
            };
            let record = ClientRecord {
                identity: identity.to_vec(),
                signature_private: signer.private.to_vec(),
                signature_public: signer.public.to_vec(),
                default_ciphersuite,
            };
            let blob = seal_record(&record)?;
            db.execute(
                "INSERT INTO qpc_client (id, version, record) VALUES (1, ?1, ?2)",
                rusqlite::params![CLIENT_RECORD_VERSION, blob],
            )?;
            Ok(signer)
        })?;
        Ok(ClientCore {
            provider,
            db,
            keys: Arc::clone(&keys),
            signer,
            identity: identity.to_vec(),
            default_ciphersuite,
            groups: HashMap::new(),
            deferred: HashMap::new(),
            reserve: HashMap::new(),
        })
    }

    /// Open the client stored in the file at `path`.
    pub fn open(path: &str, key: &[u8]) -> Result<Self> {
        let keys = storage_key(key)?;
        let _scope = KeyScope::enter(&keys);
        if !std::path::Path::new(path).exists() {
            return Err(Error::Storage("no state file at this path".into()));
        }
        let (provider, db) = QpcProvider::open(path)?;
        meta_table(&db)?;
        let row: Option<(i64, Vec<u8>)> = {
            let mut stmt = db.prepare("SELECT version, record FROM qpc_client WHERE id = 1")?;
            let mut rows = stmt.query([])?;
            match rows.next()? {
                Some(r) => Some((r.get(0)?, r.get(1)?)),
                None => None,
            }
        };
        let Some((version, blob)) = row else {
            return Err(Error::Storage("the state file holds no client".into()));
        };
        if version != CLIENT_RECORD_VERSION {
            return Err(Error::Storage(format!(
                "unknown client record version {version}"
            )));
        }
        let record: ClientRecord = open_record(&blob)?;
        let signer =
            SigningKey::from_parts(&record.signature_private, Some(&record.signature_public))?;
        Ok(ClientCore {
            provider,
            db,
            keys: Arc::clone(&keys),
            signer,
            identity: record.identity.clone(),
            default_ciphersuite: record.default_ciphersuite,
            groups: HashMap::new(),
            deferred: HashMap::new(),
            reserve: HashMap::new(),
        })
    }

    pub fn credential(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.identity.clone()).into(),
            signature_key: self.signer.public().to_vec().into(),
        }
    }

    pub fn key_package(
        &self,
        cs: u16,
        last_resort: bool,
        lifetime_seconds: Option<u64>,
    ) -> Result<Vec<u8>> {
        let cs = ciphersuite(cs)?;
        let mut builder = KeyPackage::builder().leaf_node_capabilities(capabilities());
        if let Some(t) = lifetime_seconds {
            if t == 0 || t > MAX_KEY_PACKAGE_LIFETIME_SECONDS {
                return Err(Error::Crypto(format!(
                    "KeyPackage lifetime must be 1..={MAX_KEY_PACKAGE_LIFETIME_SECONDS} seconds"
                )));
            }
            builder = builder.key_package_lifetime(Lifetime::new(t));
        }
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        let bundle = builder
            .build(cs, &self.provider, &self.signer, self.credential())
            .map_err(local)?;
        let msg: MlsMessageOut = bundle.key_package().clone().into();
        Ok(msg.to_bytes()?)
    }

    pub fn create_group(&mut self, group_id: &[u8], cs: u16) -> Result<()> {
        let cs = ciphersuite(cs)?;
        let gid = GroupId::from_slice(group_id);
        if self.groups.contains_key(group_id)
            || MlsGroup::load(self.provider.storage(), &gid)?.is_some()
        {
            return Err(Error::Storage(
                "a group with this id already exists in the store".into(),
            ));
        }
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &create_config(cs),
            gid,
            self.credential(),
        )
        .map_err(local)?;
        self.groups.insert(group_id.to_vec(), group);
        Ok(())
    }

    /// Join from a Welcome. `ratchet_tree` is the sealed tree
    /// ([`crate::welcome::seal_tree`]) for Welcomes without the
    /// ratchet_tree extension: of the Welcome's epoch, or of an earlier
    /// epoch (a base) followed by `tree_deltas`, the sealed deltas
    /// ([`crate::tree_delta`]) of the epochs after it up to the Welcome's.
    pub fn join_from_welcome(
        &mut self,
        welcome: Welcome,
        ratchet_tree: Option<&[u8]>,
        tree_deltas: &[Vec<u8>],
    ) -> Result<Vec<u8>> {
        if ratchet_tree.is_none() && !tree_deltas.is_empty() {
            return Err(Error::Malformed(
                "tree deltas need a base ratchet tree".into(),
            ));
        }
        let code: u16 = welcome.ciphersuite().into();
        ciphersuite(code)?;
        let mut builder =
            StagedWelcome::build_from_welcome(&self.provider, &join_config(), welcome)
                .map_err(remote)?;
        if let Some(sealed) = ratchet_tree {
            let pw = builder.processed_welcome();
            let gi = pw.unverified_group_info();
            let (gid, epoch) = (gi.group_id().as_slice().to_vec(), gi.epoch().as_u64());
            let key = Zeroizing::new(
                pw.export_secret(self.provider.crypto(), crate::welcome::TREE_LABEL, &[], 32)
                    .map_err(local)?,
            );
            let tree = crate::tree_delta::open_chain(sealed, tree_deltas, &key, &gid, epoch)?;
            builder = builder.with_ratchet_tree(tree);
        }
        let staged = builder.build().map_err(remote)?;
        let group = staged.into_group(&self.provider).map_err(remote)?;
        let gid = group.group_id().as_slice().to_vec();
        self.groups.insert(gid.clone(), group);
        Ok(gid)
    }

    pub fn join_by_external_commit(&mut self, group_info: &[u8]) -> Result<(Vec<u8>, CommitParts)> {
        let body = parse_message(group_info)?.extract();
        let MlsMessageBodyIn::GroupInfo(vgi) = body else {
            return Err(Error::Malformed("not a GroupInfo message".into()));
        };
        let code: u16 = vgi.ciphersuite().into();
        ciphersuite(code)?;
        // The commit is made in the GroupInfo's epoch; `finalize` returns the
        // group already at the next epoch (nothing to merge, nothing to clear:
        // on rejection the caller deletes the group and retries).
        let epoch = vgi.epoch().as_u64();
        let credential = self.credential();
        let (group, bundle) = MlsGroup::external_commit_builder()
            .with_config(join_config())
            .build_group(&self.provider, vgi, credential)
            .map_err(remote)?
            .leaf_node_parameters(
                LeafNodeParameters::builder()
                    .with_capabilities(capabilities())
                    .build(),
            )
            .load_psks(self.provider.storage())
            .map_err(local)?
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &self.signer,
                |_| true,
            )
            .map_err(local)?
            .finalize(&self.provider)
            .map_err(local)?;
        let (commit, _welcome, gi) = bundle.into_contents();
        // The new epoch's whole tree (no delta: we hold no earlier epoch).
        let key = Zeroizing::new(
            group
                .export_secret(self.provider.crypto(), crate::welcome::TREE_LABEL, &[], 32)
                .map_err(local)?,
        );
        let ratchet_tree = crate::welcome::seal_tree(
            &group.export_ratchet_tree(),
            &key,
            group.group_id().as_slice(),
            group.epoch().as_u64(),
        )?;
        let parts = CommitParts {
            ratchet_tree: Some(ratchet_tree),
            tree_delta: None,
            commit: commit.to_bytes()?,
            welcome: None,
            group_info: gi.map(|g| MlsMessageOut::from(g).to_bytes()).transpose()?,
            epoch,
        };
        let gid = group.group_id().as_slice().to_vec();
        self.groups.insert(gid.clone(), group);
        self.remember_sent(&parts.commit)?;
        Ok((gid, parts))
    }

    /// Run `f` on the group, loading it from storage if needed. On error the
    /// in-memory copy is dropped so the next call reloads the stored state.
    pub fn with_group<R>(
        &mut self,
        group_id: &[u8],
        f: impl FnOnce(&mut MlsGroup, &QpcProvider, &SigningKey) -> Result<R>,
    ) -> Result<R> {
        if !self.groups.contains_key(group_id) {
            let gid = GroupId::from_slice(group_id);
            let group =
                MlsGroup::load(self.provider.storage(), &gid)?.ok_or(Error::UnknownGroup)?;
            self.groups.insert(group_id.to_vec(), group);
        }
        let group = self.groups.get_mut(group_id).ok_or(Error::UnknownGroup)?;
        let result = f(group, &self.provider, &self.signer);
        if result.is_err() {
            self.groups.remove(group_id);
        }
        result
    }

    /// May the next decrypt in this group defer its message-secrets write?
    pub fn may_defer(&self, group_id: &[u8]) -> bool {
        self.deferred.get(group_id).copied().unwrap_or(0) < MAX_DEFERRED_WRITES
    }

    /// Record whether the last operation on the group deferred its write
    /// (a full write resets the count).
    pub fn note_deferred(&mut self, group_id: &[u8], deferred: bool) {
        if deferred {
            *self.deferred.entry(group_id.to_vec()).or_insert(0) += 1;
        } else {
            self.deferred.remove(group_id);
            self.reserve.remove(group_id);
        }
    }

    /// The group's entity was (or may have been) written from memory: a
    /// send reservation no longer holds.
    pub fn end_reservation(&mut self, group_id: &[u8]) {
        self.reserve.remove(group_id);
    }

    /// Encrypt without writing the message-secrets entity, under a send
    /// reservation (docs/MLS.md, "Senders"): the stored entity's sender
    /// ratchet is ahead of the in-memory one by at least the reservation,
    /// so after a crash the reloaded group continues from a generation no
    /// message used (receivers see a gap, never a reused key or nonce).
    pub fn encrypt_reserved(&mut self, group_id: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let small = self.with_group(group_id, |g, _, _| {
            Ok(g.members().nth(RESERVE_MIN_MEMBERS - 1).is_none())
        })?;
        if small {
            let out = self.with_group(group_id, |g, p, s| {
                Ok(g.create_message(p, s, plaintext)
                    .map_err(local)?
                    .to_bytes()?)
            })?;
            // Written from memory: the stored ratchet is exact again.
            self.note_deferred(group_id, false);
            return Ok(out);
        }
        let left = match self.reserve.remove(group_id) {
            Some(n) if n > 0 => n,
            _ => self.reserve_sends(group_id)?,
        };
        let out = {
            let _defer = crate::codec::DeferScope::enter();
            self.with_group(group_id, |g, p, s| {
                Ok(g.create_message(p, s, plaintext)
                    .map_err(local)?
                    .to_bytes()?)
            })?
        };
        self.reserve.insert(group_id.to_vec(), left - 1);
        Ok(out)
    }

    /// Store the group's message secrets with our sender ratchet advanced by
    /// `SEND_RESERVE` generations, leaving the in-memory group as it is.
    ///
    /// A second copy is loaded from storage and ratcheted forward by
    /// encrypting empty messages that are never sent (their writes deferred),
    /// then its entity is written. Storage holds the sender ratchet as of the
    /// last write from memory or the last reservation, both at or ahead of
    /// the in-memory ratchet (reservations are only renewed when used up),
    /// so the stored one ends at least `SEND_RESERVE` ahead. The copy's
    /// receive ratchets are the stored ones, so the write moves nothing else.
    fn reserve_sends(&mut self, group_id: &[u8]) -> Result<u32> {
        // Same checks and errors as a send (inactive, pending proposals).
        self.with_group(group_id, |g, _, _| {
            if !g.is_active() {
                return Err(Error::NotAMember("we are no longer a member".into()));
            }
            if g.pending_proposals().next().is_some() {
                return Err(Error::PendingCommit(
                    "proposals are pending: commit them first".into(),
                ));
            }
            Ok(())
        })?;
        let gid = GroupId::from_slice(group_id);
        let mut copy = MlsGroup::load(self.provider.storage(), &gid)?.ok_or(Error::UnknownGroup)?;
        {
            let _defer = crate::codec::DeferScope::enter();
            for _ in 0..SEND_RESERVE {
                copy.create_message(&self.provider, &self.signer, &[])
                    .map_err(local)?;
            }
        }
        let policy = copy.past_epoch_deletion_policy().clone();
        copy.set_past_epoch_deletion_policy(&self.provider, policy)
            .map_err(|e| Error::Storage(e.to_string()))?;
        Ok(SEND_RESERVE)
    }

    /// Write the message secrets of every group with deferred writes (in
    /// the caller's transaction).
    pub fn flush(&mut self) -> Result<()> {
        let dirty: Vec<Vec<u8>> = self.deferred.keys().cloned().collect();
        for gid in dirty {
            if let Some(g) = self.groups.get_mut(&gid) {
                // Re-setting the same policy writes the whole entity; it is
                // OpenMLS's one public call that does only that.
                let policy = g.past_epoch_deletion_policy().clone();
                g.set_past_epoch_deletion_policy(&self.provider, policy)
                    .map_err(|e| Error::Storage(e.to_string()))?;
            }
            self.deferred.remove(&gid);
            self.reserve.remove(&gid);
        }
        Ok(())
    }

    /// Flush, drop the groups held in memory (each reloads from storage on
    /// its next use, as after `open`; a send reservation ends: the stored
    /// sender ratchet is ahead, so the reloaded group skips, never reuses, a
    /// generation) and hand SQLite's page cache back (`shrink_memory`).
    pub fn release_memory(&mut self) -> Result<()> {
        self.flush()?;
        self.groups.clear();
        self.deferred.clear();
        self.reserve.clear();
        self.db.execute_batch("PRAGMA shrink_memory")?;
        Ok(())
    }

    pub fn has_group(&mut self, group_id: &[u8]) -> Result<bool> {
        if self.groups.contains_key(group_id) {
            return Ok(true);
        }
        let gid = GroupId::from_slice(group_id);
        Ok(MlsGroup::load(self.provider.storage(), &gid)?.is_some())
    }

    pub fn delete_group(&mut self, group_id: &[u8]) -> Result<()> {
        self.deferred.remove(group_id);
        self.reserve.remove(group_id);
        let gid = GroupId::from_slice(group_id);
        let mut group = match self.groups.remove(group_id) {
            Some(g) => g,
            None => MlsGroup::load(self.provider.storage(), &gid)?.ok_or(Error::UnknownGroup)?,
        };
        group.delete(self.provider.storage()).map_err(local)
    }

    /// Remember a handshake message we sent (see `qpc_sent`).
    pub fn remember_sent(&self, message: &[u8]) -> Result<()> {
        self.db
            .prepare_cached("INSERT OR IGNORE INTO qpc_sent (digest) VALUES (?1)")?
            .execute(rusqlite::params![digest(message)])?;
        self.db
            .prepare_cached(
                "DELETE FROM qpc_sent WHERE seq <= (SELECT max(seq) FROM qpc_sent) - ?1",
            )?
            .execute(rusqlite::params![SENT_DIGESTS_KEPT])?;
        Ok(())
    }

    /// Did we send exactly these bytes?
    pub fn was_sent(&self, message: &[u8]) -> Result<bool> {
        let n: i64 = self
            .db
            .prepare_cached("SELECT count(*) FROM qpc_sent WHERE digest = ?1")?
            .query_row(rusqlite::params![digest(message)], |r| r.get(0))?;
        Ok(n > 0)
    }

    pub fn group_ids(&self) -> Result<Vec<Vec<u8>>> {
        let mut stmt = self.db.prepare(
            "SELECT group_id FROM openmls_group_data WHERE data_type = 'join_group_config'",
        )?;
        let blobs = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut ids = Vec::with_capacity(blobs.len());
        for blob in blobs {
            let gid: GroupId = open_record(&blob)?;
            ids.push(gid.as_slice().to_vec());
        }
        ids.sort();
        Ok(ids)
    }
}

/// Commit bytes before conversion to Python objects.
pub type CommitParts = crate::types::CommitData;

/// Run `f` on the client state with the GIL released, the client's storage
/// key installed for the codec, and panics turned into errors. For reads:
/// use [`run_write`] for anything that may change stored state.
pub fn run<T: Send>(
    py: Python<'_>,
    shared: &Shared,
    f: impl FnOnce(&mut ClientCore) -> Result<T> + Send,
) -> PyResult<T> {
    run_inner(py, shared, false, f)
}

/// Like [`run`], inside one SQLite transaction: the operation's writes
/// (OpenMLS's and ours) are committed together, or rolled back together if
/// it fails (also on a caught panic). After a rollback the in-memory groups
/// are dropped, so the next call reloads exactly what is stored.
pub fn run_write<T: Send>(
    py: Python<'_>,
    shared: &Shared,
    f: impl FnOnce(&mut ClientCore) -> Result<T> + Send,
) -> PyResult<T> {
    run_inner(py, shared, true, f)
}

fn run_inner<T: Send>(
    py: Python<'_>,
    shared: &Shared,
    write: bool,
    f: impl FnOnce(&mut ClientCore) -> Result<T> + Send,
) -> PyResult<T> {
    let result = py.detach(|| {
        let mut guard = shared
            .lock()
            .map_err(|_| Error::Storage("client state is poisoned".into()))?;
        let core = guard
            .as_mut()
            .ok_or_else(|| Error::Storage("the client is closed".into()))?;
        let _scope = KeyScope::enter(&core.keys);
        let guarded = |core: &mut ClientCore| {
            catch_unwind(AssertUnwindSafe(|| f(core)))
                .unwrap_or_else(|_| Err(Error::Crypto("internal error (caught a panic)".into())))
        };
        if !write {
            return guarded(core);
        }
        let db = core.db.share();
        let result = db.transaction(|| guarded(core));
        if result.is_err() {
            core.groups.clear();
            core.deferred.clear();
            // Storage is at or ahead of every generation used: safe to reload.
            core.reserve.clear();
        }
        result
    });
    result.map_err(PyErr::from)
}

/// Like [`run`] but without a client (stateless parsing).
pub fn run_stateless<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T> + Send) -> PyResult<T> {
    let result = py.detach(|| {
        catch_unwind(AssertUnwindSafe(f))
            .unwrap_or_else(|_| Err(Error::Crypto("internal error (caught a panic)".into())))
    });
    result.map_err(PyErr::from)
}

/// Fuzz targets of the decoders that take outside bytes: MLS messages
/// (parse, KeyPackage validation) and stored records. Any panic fails the
/// property (the binding also catches panics at the FFI, see [`run_stateless`]).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const VECTORS: &[&[u8]] = &[
        include_bytes!("../../tests/vectors/mls/classical/key_package.bin"),
        include_bytes!("../../tests/vectors/mls/classical/welcome.bin"),
        include_bytes!("../../tests/vectors/mls/classical/commit.bin"),
        include_bytes!("../../tests/vectors/mls/classical/application1.bin"),
        include_bytes!("../../tests/vectors/mls/hybrid/key_package.bin"),
        include_bytes!("../../tests/vectors/mls/hybrid/welcome.bin"),
        include_bytes!("../../tests/vectors/mls/hybrid/commit.bin"),
    ];

    /// A vector with 1-4 edits: byte overwrites, a truncation or a cut-out run.
    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        (
            0..VECTORS.len(),
            proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            any::<usize>(),
            0u8..3,
        )
            .prop_map(|(which, edits, cut, shape)| {
                let mut data = VECTORS[which].to_vec();
                let len = data.len();
                for (at, value) in edits {
                    data[at % len] = value;
                }
                match shape {
                    0 => data.truncate(cut % (len + 1)),
                    1 => {
                        let at = cut % len;
                        data.drain(at..(at + 1 + cut % 16).min(len));
                    }
                    _ => {}
                }
                data
            })
    }

    #[test]
    fn vectors_parse() {
        for v in VECTORS {
            assert!(parse_message(v).is_ok());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3_000, ..ProptestConfig::default() })]

        #[test]
        fn parse_message_never_panics(data in mutated()) {
            let _ = parse_message(&data);
        }

        #[test]
        fn parse_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_message(&data);
        }

        #[test]
        fn key_package_validation_never_panics(data in mutated()) {
            let crypto = QpcProvider::crypto_only().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let _ = validate_key_package(&crypto, &data);
        }

        #[test]
        fn stored_record_open_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..128),
            first in 0u8..3,
        ) {
            let keys = CodecKeys::derive(&[7u8; 32]);
            let mut blob = data;
            if let Some(b) = blob.first_mut() {
                *b = first;
            }
            prop_assert!(keys.open(&blob).is_err());
        }
    }
}
