//! `Client`: one device's MLS state in one encrypted SQLite file.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::core::{run, run_write, ClientCore, Shared, DEFAULT_CIPHERSUITE};
use crate::group::Group;
use crate::types::{pybytes, CommitOutput};

/// One device's MLS state in one encrypted SQLite file.
///
/// Construct with `Client.create` (new file) or `Client.open` (existing
/// file). Every value in the file is encrypted under the 32-byte storage key.
#[pyclass(module = "proto._mls", frozen)]
pub struct Client {
    shared: Shared,
    identity: Vec<u8>,
    signature_public_key: Vec<u8>,
    default_ciphersuite: u16,
    path: String,
}

impl Client {
    fn wrap(core: ClientCore, path: &str) -> Self {
        Client {
            identity: core.identity.clone(),
            signature_public_key: core.signer.public().to_vec(),
            default_ciphersuite: core.default_ciphersuite,
            path: path.to_string(),
            shared: Arc::new(Mutex::new(Some(core))),
        }
    }

    fn suite(&self, ciphersuite: Option<u16>) -> u16 {
        ciphersuite.unwrap_or(self.default_ciphersuite)
    }

    fn group(&self, group_id: Vec<u8>) -> Group {
        Group::new(Arc::clone(&self.shared), group_id)
    }

    /// One KeyPackage (ordinary or last resort) as MLSMessage bytes.
    fn one_key_package(
        &self,
        py: Python<'_>,
        ciphersuite: Option<u16>,
        lifetime_seconds: Option<u64>,
        last_resort: bool,
    ) -> PyResult<Py<PyBytes>> {
        let cs = self.suite(ciphersuite);
        let kp = run_write(py, &self.shared, |c| {
            c.key_package(cs, last_resort, lifetime_seconds)
        })?;
        Ok(pybytes(py, &kp))
    }
}

#[pymethods]
impl Client {
    /// Create a client in a new state file. `identity` is the credential
    /// identity (e.g. b"user/device"); `signature_key` optionally imports a
    /// raw 32-byte Ed25519 private key (else one is generated). Raises
    /// StorageFailure if the file already holds a client.
    #[staticmethod]
    #[pyo3(signature = (path, storage_key, identity, *, signature_key=None, ciphersuite=DEFAULT_CIPHERSUITE))]
    fn create(
        py: Python<'_>,
        path: &str,
        storage_key: &[u8],
        identity: &[u8],
        signature_key: Option<&[u8]>,
        ciphersuite: u16,
    ) -> PyResult<Self> {
        let core = py
            .detach(|| ClientCore::create(path, storage_key, identity, signature_key, ciphersuite))
            .map_err(PyErr::from)?;
        Ok(Client::wrap(core, path))
    }

    /// Open the client stored at `path`. A wrong key raises StorageFailure.
    #[staticmethod]
    fn open(py: Python<'_>, path: &str, storage_key: &[u8]) -> PyResult<Self> {
        let core = py
            .detach(|| ClientCore::open(path, storage_key))
            .map_err(PyErr::from)?;
        Ok(Client::wrap(core, path))
    }

    /// The credential identity chosen at creation.
    #[getter]
    fn identity<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.identity)
    }

    /// The Ed25519 public key in our credential.
    #[getter]
    fn signature_public_key<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.signature_public_key)
    }

    /// Ciphersuite used when a call does not name one.
    #[getter]
    fn default_ciphersuite(&self) -> u16 {
        self.default_ciphersuite
    }

    /// Path of the state file.
    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    /// A fresh KeyPackage (MLSMessage bytes); its private keys are stored.
    /// `lifetime_seconds` overrides OpenMLS's default validity (12 weeks).
    #[pyo3(signature = (ciphersuite=None, *, lifetime_seconds=None))]
    fn key_package(
        &self,
        py: Python<'_>,
        ciphersuite: Option<u16>,
        lifetime_seconds: Option<u64>,
    ) -> PyResult<Py<PyBytes>> {
        self.one_key_package(py, ciphersuite, lifetime_seconds, false)
    }

    /// `count` fresh KeyPackages, for a batch upload.
    #[pyo3(signature = (count, ciphersuite=None, *, lifetime_seconds=None))]
    fn key_packages(
        &self,
        py: Python<'_>,
        count: usize,
        ciphersuite: Option<u16>,
        lifetime_seconds: Option<u64>,
    ) -> PyResult<Vec<Py<PyBytes>>> {
        let cs = self.suite(ciphersuite);
        let kps = run_write(py, &self.shared, |c| {
            (0..count)
                .map(|_| c.key_package(cs, false, lifetime_seconds))
                .collect::<Result<Vec<_>, _>>()
        })?;
        Ok(kps.iter().map(|k| pybytes(py, k)).collect())
    }

    /// A KeyPackage with the last_resort extension: joins do not consume it.
    #[pyo3(signature = (ciphersuite=None, *, lifetime_seconds=None))]
    fn last_resort_key_package(
        &self,
        py: Python<'_>,
        ciphersuite: Option<u16>,
        lifetime_seconds: Option<u64>,
    ) -> PyResult<Py<PyBytes>> {
        self.one_key_package(py, ciphersuite, lifetime_seconds, true)
    }

    /// Create a group with the given id, with us as the only member.
    #[pyo3(signature = (group_id, ciphersuite=None))]
    fn create_group(
        &self,
        py: Python<'_>,
        group_id: &[u8],
        ciphersuite: Option<u16>,
    ) -> PyResult<Group> {
        let cs = self.suite(ciphersuite);
        run_write(py, &self.shared, |c| c.create_group(group_id, cs))?;
        Ok(self.group(group_id.to_vec()))
    }

    /// Join from a Welcome. `ratchet_tree` is the sealed tree
    /// (`CommitOutput.ratchet_tree` / `Group.export_ratchet_tree`) unless
    /// the Welcome carries the tree: of the Welcome's epoch, or of an
    /// earlier epoch Eb (a base) with `tree_deltas` the sealed deltas
    /// (`CommitOutput.tree_delta`) of epochs Eb+1 .. the Welcome's, in
    /// order. A wrong, tampered, reordered, missing or extra part raises
    /// InvalidMessage (garbage MalformedInput) and consumes nothing.
    /// Raises NoWelcomeForUs if it holds no secrets for any of our
    /// KeyPackages.
    /// `receipt=seq` records the join under the caller's delivery sequence
    /// number in the same transaction; the same Welcome under the same seq
    /// then returns the group again instead of failing (docs/MLS.md,
    /// "Receipts").
    #[pyo3(signature = (welcome, ratchet_tree=None, *, tree_deltas=Vec::new(), receipt=None))]
    fn join_from_welcome(
        &self,
        py: Python<'_>,
        welcome: &[u8],
        ratchet_tree: Option<&[u8]>,
        tree_deltas: Vec<Vec<u8>>,
        receipt: Option<u64>,
    ) -> PyResult<Group> {
        let gid = run_write(py, &self.shared, |c| {
            join_with_receipt(c, receipt, welcome, |c| {
                let w = crate::welcome::parse_welcome(welcome)?;
                c.join_from_welcome(w, ratchet_tree, &tree_deltas)
            })
        })?;
        Ok(self.group(gid))
    }

    /// Join from a split Welcome (`split_welcome`): the common part, our
    /// own secrets part, and the sealed ratchet tree (with `tree_deltas`);
    /// `tree_deltas` and `receipt` as for `join_from_welcome`.
    #[pyo3(signature = (common, secrets, ratchet_tree=None, *, tree_deltas=Vec::new(), receipt=None))]
    fn join_from_welcome_parts(
        &self,
        py: Python<'_>,
        common: &[u8],
        secrets: &[u8],
        ratchet_tree: Option<&[u8]>,
        tree_deltas: Vec<Vec<u8>>,
        receipt: Option<u64>,
    ) -> PyResult<Group> {
        // What the receipt is bound to: both parts, length-prefixed.
        let mut bound = Vec::with_capacity(8 + common.len() + secrets.len());
        bound.extend_from_slice(&(common.len() as u64).to_be_bytes());
        bound.extend_from_slice(common);
        bound.extend_from_slice(secrets);
        let gid = run_write(py, &self.shared, |c| {
            join_with_receipt(c, receipt, &bound, |c| {
                let w = crate::welcome::assemble(common, secrets)?;
                c.join_from_welcome(w, ratchet_tree, &tree_deltas)
            })
        })?;
        Ok(self.group(gid))
    }

    /// Make every committed transaction durable (fsync the state file's
    /// write-ahead log; transactions are otherwise crash-safe but not
    /// power-cut-safe, see docs/MLS.md, "Storage"). Call it before another
    /// file records that a commit or join happened.
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        let wal = format!("{}-wal", self.path);
        run(py, &self.shared, |_| {
            match std::fs::File::open(&wal).and_then(|f| f.sync_all()) {
                Ok(()) => Ok(()),
                // No log: everything is in the main file, synced at checkpoint.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(crate::error::Error::Storage(format!("fsync: {e}"))),
            }
        })
    }

    /// Sequence numbers with a stored receipt (`Group.process(...,
    /// receipt=)`, joins), ascending.
    fn receipts(&self, py: Python<'_>) -> PyResult<Vec<u64>> {
        run(py, &self.shared, |c| crate::receipt::list(&c.db))
    }

    /// Delete the receipts with seq <= `upto` (every receipt without it),
    /// once the caller's own record of them is committed; returns how many.
    #[pyo3(signature = (upto=None))]
    fn forget_receipts(&self, py: Python<'_>, upto: Option<u64>) -> PyResult<usize> {
        run_write(py, &self.shared, |c| crate::receipt::forget(&c.db, upto))
    }

    /// Join from a GroupInfo (with ratchet tree) by external commit. Returns
    /// the group, already at the new epoch, and the commit to send; if the
    /// node rejects it, delete the group and retry with a fresh GroupInfo.
    fn join_by_external_commit(
        &self,
        py: Python<'_>,
        group_info: &[u8],
    ) -> PyResult<(Group, Py<CommitOutput>)> {
        let (gid, parts) = run_write(py, &self.shared, |c| c.join_by_external_commit(group_info))?;
        Ok((self.group(gid), parts.into_py(py)?))
    }

    /// The group with this id from storage (UnknownGroup if absent).
    fn load_group(&self, py: Python<'_>, group_id: &[u8]) -> PyResult<Group> {
        let found = run(py, &self.shared, |c| c.has_group(group_id))?;
        if !found {
            return Err(crate::error::Error::UnknownGroup.into());
        }
        Ok(self.group(group_id.to_vec()))
    }

    /// Ids of every group in storage, sorted.
    fn group_ids(&self, py: Python<'_>) -> PyResult<Vec<Py<PyBytes>>> {
        let ids = run(py, &self.shared, |c| c.group_ids())?;
        Ok(ids.iter().map(|i| pybytes(py, i)).collect())
    }

    /// Delete a group's state from storage.
    fn delete_group(&self, py: Python<'_>, group_id: &[u8]) -> PyResult<()> {
        run_write(py, &self.shared, |c| c.delete_group(group_id))
    }

    /// Write now what decrypting application messages deferred (see
    /// docs/MLS.md, "Receivers"); `close` does it too.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        run_write(py, &self.shared, |c| c.flush())
    }

    /// Flush, then free what the client holds in memory: the groups it
    /// keeps loaded (they reload from storage on next use) and SQLite's
    /// page cache (16 MiB at most per client). For a process that runs many
    /// clients (bench/groups.py: hundreds of devices per worker) or a
    /// client going idle; the next operation is slower by one group load.
    fn release_memory(&self, py: Python<'_>) -> PyResult<()> {
        run_write(py, &self.shared, |c| c.release_memory())
    }

    /// Flush, then close the state file. Later calls on this client or its
    /// groups raise StorageFailure. Closing a closed client does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let open = py.detach(|| self.shared.lock().map(|g| g.is_some()).unwrap_or(false));
        let flushed = if open {
            run_write(py, &self.shared, |c| c.flush())
        } else {
            Ok(())
        };
        py.detach(|| {
            if let Ok(mut guard) = self.shared.lock() {
                guard.take();
            }
        });
        // Closed either way; a failed flush loses only deferred ratchet
        // steps (see docs/MLS.md) and is reported.
        flushed
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "Client(path={:?}, ciphersuite=0x{:04x})",
            self.path, self.default_ciphersuite
        )
    }
}

/// Run a join `f` unless `seq` already has a receipt for the same Welcome
/// (then return the group it joined); store the receipt after `f`.
fn join_with_receipt(
    core: &mut ClientCore,
    seq: Option<u64>,
    bound: &[u8],
    f: impl FnOnce(&mut ClientCore) -> crate::error::Result<Vec<u8>>,
) -> crate::error::Result<Vec<u8>> {
    use crate::error::Error;
    use crate::receipt::{self, Processed};
    let Some(seq) = seq else {
        return f(core);
    };
    if let Some(stored) = receipt::load(&core.db, seq, bound)? {
        return match stored {
            Processed::Joined { group_id } if core.has_group(&group_id)? => Ok(group_id),
            Processed::Joined { .. } => Err(Error::UnknownGroup),
            _ => Err(Error::Invalid(format!(
                "receipt {seq} is a processed message, not a join"
            ))),
        };
    }
    let gid = f(core)?;
    receipt::store(
        &core.db,
        seq,
        bound,
        Processed::Joined {
            group_id: gid.clone(),
        },
    )?;
    Ok(gid)
}
