//! Our OpenMLS provider: libcrux for crypto and randomness, SQLite (through
//! `openmls_sqlite_storage` and the encrypting codec) for state.

use openmls_libcrux_crypto::CryptoProvider;
use openmls_sqlite_storage::{Connection, SqliteStorageProvider};
use openmls_traits::OpenMlsProvider;

use crate::codec::EncryptingCodec;
use crate::error::{Error, Result};

pub type Storage = SqliteStorageProvider<EncryptingCodec, Connection>;

/// Crypto/rand from `openmls_libcrux_crypto`, storage from
/// `openmls_sqlite_storage` with [`EncryptingCodec`].
pub struct QpcProvider {
    crypto: CryptoProvider,
    storage: Storage,
}

/// Open a connection with the pragmas both of our connections use.
pub fn open_connection(path: &str) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // WAL + NORMAL: each OpenMLS write is an append, not an fsync.
    // secure_delete: freed pages are zeroed (they only ever held ciphertext).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(conn)
}

impl QpcProvider {
    /// Open (creating if needed) the OpenMLS tables in the file at `path`.
    pub fn open(path: &str) -> Result<Self> {
        let crypto = CryptoProvider::new()?;
        let conn = open_connection(path)?;
        let mut storage = Storage::new(conn);
        storage
            .run_migrations()
            .map_err(|e| Error::Storage(format!("migrations: {e}")))?;
        Ok(QpcProvider { crypto, storage })
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
