//! Receipts: the result of processing a delivered message, stored in the
//! same transaction as the MLS state change it caused (`qpc_receipts`).
//!
//! Decrypting a message *is* advancing the stored group state (its key is
//! gone afterwards), and the caller keeps its history in another file. With
//! a receipt the pair is still atomic: `Group.process(message, receipt=seq)`
//! writes the result (plaintext, commit outcome, ...) encrypted like every
//! other value, keyed by the caller's delivery sequence number, in the
//! operation's transaction. The caller commits its history, then deletes the
//! receipts (`Client.forget_receipts`). A crash in between leaves the
//! receipt; delivering the same message again with the same `seq` returns
//! the stored result without processing it again (a message is never
//! decrypted twice, never lost). See docs/MLS.md, "Receipts".

use serde::{Deserialize, Serialize};

use crate::codec::{open_record, seal_record};
use crate::error::{Error, Result};
use crate::types::MemberData;

/// The table (created with the client's own tables).
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS qpc_receipts (
    seq INTEGER PRIMARY KEY,
    record BLOB NOT NULL
);";

/// The result of processing one message, as stored and as returned.
#[derive(Serialize, Deserialize)]
pub enum Processed {
    Application {
        plaintext: Vec<u8>,
        sender_leaf: u32,
        sender_identity: Vec<u8>,
        epoch: u64,
        aad: Vec<u8>,
    },
    Commit {
        sender_leaf: Option<u32>,
        sender_identity: Vec<u8>,
        epoch: u64,
        added: Vec<MemberData>,
        removed: Vec<u32>,
        self_removed: bool,
    },
    Proposal {
        sender_leaf: Option<u32>,
        sender_identity: Vec<u8>,
        epoch: u64,
        kind: String,
    },
    Own {
        epoch: u64,
        content_type: String,
    },
    /// A Welcome that made us join this group.
    Joined {
        group_id: Vec<u8>,
    },
}

/// The stored value: the result bound to its row and to the message it is
/// the result of (the SHA-256 of its bytes), so a row moved to another seq
/// or a different message under the same seq is refused.
#[derive(Serialize, Deserialize)]
struct Record {
    seq: u64,
    digest: Vec<u8>,
    result: Processed,
}

impl Drop for Record {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        if let Processed::Application { plaintext, .. } = &mut self.result {
            plaintext.zeroize();
        }
    }
}

fn digest(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

fn sql_seq(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| Error::Malformed("receipt seq out of range (max 2^63-1)".into()))
}

/// The stored result for `seq`, if any. A receipt for `seq` that belongs
/// to another message is an error (the caller reused a sequence number).
pub fn load(conn: &rusqlite::Connection, seq: u64, message: &[u8]) -> Result<Option<Processed>> {
    let blob: Option<Vec<u8>> = {
        let mut stmt = conn.prepare_cached("SELECT record FROM qpc_receipts WHERE seq = ?1")?;
        let mut rows = stmt.query(rusqlite::params![sql_seq(seq)?])?;
        match rows.next()? {
            Some(r) => Some(r.get(0)?),
            None => None,
        }
    };
    let Some(blob) = blob else {
        return Ok(None);
    };
    let mut record: Record = open_record(&blob)?;
    if record.seq != seq {
        return Err(Error::Storage(
            "a receipt is stored under the wrong seq".into(),
        ));
    }
    if record.digest != digest(message) {
        return Err(Error::Invalid(format!(
            "receipt {seq} holds the result of a different message"
        )));
    }
    let result = std::mem::replace(
        &mut record.result,
        Processed::Own {
            epoch: 0,
            content_type: String::new(),
        },
    );
    Ok(Some(result))
}

/// Store the result of processing `message` under `seq` (in the caller's
/// transaction).
pub fn store(
    conn: &rusqlite::Connection,
    seq: u64,
    message: &[u8],
    result: Processed,
) -> Result<Processed> {
    let record = Record {
        seq,
        digest: digest(message),
        result,
    };
    let blob = seal_record(&record)?;
    conn.prepare_cached("INSERT INTO qpc_receipts (seq, record) VALUES (?1, ?2)")?
        .execute(rusqlite::params![sql_seq(seq)?, blob])?;
    let mut record = record;
    Ok(std::mem::replace(
        &mut record.result,
        Processed::Own {
            epoch: 0,
            content_type: String::new(),
        },
    ))
}

/// The seqs with a stored receipt, ascending.
pub fn list(conn: &rusqlite::Connection) -> Result<Vec<u64>> {
    let mut stmt = conn.prepare_cached("SELECT seq FROM qpc_receipts ORDER BY seq")?;
    let seqs = stmt
        .query_map([], |r| r.get::<_, i64>(0))?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // Rows are only written by `store`, which refuses negative seqs.
    Ok(seqs
        .into_iter()
        .filter_map(|s| u64::try_from(s).ok())
        .collect())
}

/// Delete the receipts with seq <= `upto` (all with `None`); how many.
pub fn forget(conn: &rusqlite::Connection, upto: Option<u64>) -> Result<usize> {
    let n = match upto {
        None => conn.execute("DELETE FROM qpc_receipts", [])?,
        Some(u) => {
            let u = i64::try_from(u).unwrap_or(i64::MAX);
            conn.execute(
                "DELETE FROM qpc_receipts WHERE seq <= ?1",
                rusqlite::params![u],
            )?
        }
    };
    Ok(n)
}
