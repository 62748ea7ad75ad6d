//! Our OpenMLS provider: libcrux for crypto and randomness, SQLite (through
//! `openmls_sqlite_storage` and the encrypting codec) for state.
//!
//! One SQLite connection per client, shared by OpenMLS's storage provider and
//! our own tables (`core.rs`), so that every state-changing operation can run
//! in one transaction on that connection ([`Db::transaction`]).

use std::borrow::Borrow;
use std::sync::Arc;

use openmls_libcrux_crypto::CryptoProvider;
use openmls_sqlite_storage::{Connection, SqliteStorageProvider};
use openmls_traits::OpenMlsProvider;

use crate::codec::EncryptingCodec;
use crate::error::{Error, Result};

/// A handle on the client's one connection, held both by the storage provider
/// and by `ClientCore`.
///
/// `rusqlite::Connection` is `Send` but not `Sync`, so `Arc<Connection>` is
/// neither. Every clone of a `Db` lives inside one `ClientCore` (the provider's
/// and the core's own), which is only ever reached through the client's
/// `Mutex`: the clones move between threads together and are never used by
/// two threads at once, which is what `Send` for a `!Sync` value requires.
pub struct Db(Arc<Connection>);

// SAFETY: see the type's documentation; `Db` is not `Clone` outside this
// module and all clones are owned by the same `ClientCore`.
unsafe impl Send for Db {}

impl Borrow<Connection> for Db {
    fn borrow(&self) -> &Connection {
        &self.0
    }
}

impl std::ops::Deref for Db {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0
    }
}

impl Db {
    pub fn share(&self) -> Db {
        Db(Arc::clone(&self.0))
    }

    /// Run `f` inside `BEGIN IMMEDIATE … COMMIT`; `ROLLBACK` if `f` fails or
    /// the commit does. Everything an operation writes (OpenMLS's rows and
    /// ours) becomes durable at once or not at all, and WAL pages touched
    /// several times in the operation are written once.
    pub fn transaction<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.0.execute_batch("BEGIN IMMEDIATE")?;
        let result = f().and_then(|v| {
            self.0.execute_batch("COMMIT")?;
            Ok(v)
        });
        if result.is_err() && !self.0.is_autocommit() {
            // Best effort: a failed ROLLBACK leaves SQLite to roll back the
            // open transaction when the connection closes.
            let _ = self.0.execute_batch("ROLLBACK");
        }
        result
    }
}

pub type Storage = SqliteStorageProvider<EncryptingCodec, Db>;

/// Crypto/rand from `openmls_libcrux_crypto`, storage from
/// `openmls_sqlite_storage` with [`EncryptingCodec`].
pub struct QpcProvider {
    crypto: CryptoProvider,
    storage: Storage,
}

/// Open a connection with our pragmas.
pub fn open_connection(path: &str) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // WAL + NORMAL: each operation's transaction is an append to the WAL,
    // not an fsync (durable across process crashes; an OS crash may lose the
    // last transactions, never leaves a torn one).
    // secure_delete: freed pages are zeroed, so deleted (old-epoch) secrets
    // do not linger in the file even as ciphertext.
    // 16 KiB pages (default 4 KiB) for new files; it only takes effect
    // before the file's first write (existing files keep theirs). Large
    // entities (ratchet tree, message secrets: MBs for big groups) take a
    // quarter of the overflow pages, WAL frames and write calls; measured
    // -20% per message at 512 members and -20% at 8 (docs/perf/mls.md);
    // 64 KiB made small groups 2x slower.
    conn.pragma_update(None, "page_size", 16384)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    // Page cache of 16 MiB (default 2 MiB): a 512-member hybrid group's
    // state is ~5 MB and is rewritten in large parts by every operation.
    conn.pragma_update(None, "cache_size", -16384)?;
    // Keep temporary b-trees in memory.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
}

impl QpcProvider {
    /// Open (creating if needed) the OpenMLS tables in the file at `path`;
    /// returns the provider and the connection handle our own tables use.
    pub fn open(path: &str) -> Result<(Self, Db)> {
        let crypto = CryptoProvider::new()?;
        let mut conn = open_connection(path)?;
        SqliteStorageProvider::<EncryptingCodec, &mut Connection>::new(&mut conn)
            .run_migrations()
            .map_err(|e| Error::Storage(format!("migrations: {e}")))?;
        // Deferred message-secrets writes (`codec::DeferScope`) reach SQLite
        // as an empty blob, never a valid record; this drops them, so the
        // row keeps its last full value. TEMP: per connection, not stored.
        conn.execute_batch(
            "CREATE TEMP TRIGGER IF NOT EXISTS qpc_deferred_write
             BEFORE INSERT ON main.openmls_group_data
             WHEN length(NEW.group_data) = 0
             BEGIN SELECT RAISE(IGNORE); END;",
        )?;
        // Shared, never concurrently used: see `Db`.
        #[allow(clippy::arc_with_non_send_sync)]
        let db = Db(Arc::new(conn));
        let storage = Storage::new(db.share());
        Ok((QpcProvider { crypto, storage }, db))
    }

    /// A provider used only for stateless validation (no storage writes).
    pub fn crypto_only() -> Result<CryptoProvider> {
        Ok(CryptoProvider::new()?)
    }
}

impl OpenMlsProvider for QpcProvider {
    type CryptoProvider = CryptoProvider;
    type RandProvider = CryptoProvider;
    type StorageProvider = Storage;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}
