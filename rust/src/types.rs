//! Plain result objects handed to Python. All frozen; bytes are `bytes`.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Python-style rendering of an optional value for reprs.
fn py_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "None".to_string(), |v| v.to_string())
}

pub fn pybytes(py: Python<'_>, data: &[u8]) -> Py<PyBytes> {
    PyBytes::new(py, data).unbind()
}

/// A group member: leaf index, credential identity and Ed25519 public key.
#[pyclass(module = "proto._mls", frozen, get_all)]
pub struct Member {
    pub leaf_index: u32,
    pub identity: Py<PyBytes>,
    pub signature_key: Py<PyBytes>,
}

#[pymethods]
impl Member {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Member(leaf_index={}, identity={})",
            self.leaf_index,
            self.identity
                .bind(py)
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_default()
        )
    }
}

/// Rust-side member data, converted to [`Member`] with the GIL held.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct MemberData {
    pub leaf_index: u32,
    pub identity: Vec<u8>,
    pub signature_key: Vec<u8>,
}

impl MemberData {
    pub fn into_py(self, py: Python<'_>) -> PyResult<Py<Member>> {
        Py::new(
            py,
            Member {
                leaf_index: self.leaf_index,
                identity: pybytes(py, &self.identity),
                signature_key: pybytes(py, &self.signature_key),
            },
        )
    }
}

pub fn members_into_py(py: Python<'_>, members: Vec<MemberData>) -> PyResult<Vec<Py<Member>>> {
    members.into_iter().map(|m| m.into_py(py)).collect()
}

/// A commit to send: `commit` for current members, `welcome` for added ones,
/// `group_info` (with ratchet tree) for external joiners, and `epoch`, the
/// epoch the commit was made in (what enqueueCommit must name).
#[pyclass(module = "proto._mls", frozen, get_all)]
pub struct CommitOutput {
    /// The commit (MlsMessage bytes) to fan out to the current members.
    pub commit: Py<PyBytes>,
    /// The Welcome for new members, if members were added.
    pub welcome: Option<Py<PyBytes>>,
    /// GroupInfo for external joins, if produced (without the ratchet tree
    /// unless the commit put it into the Welcome).
    pub group_info: Option<Py<PyBytes>>,
    /// The new epoch's whole ratchet tree, sealed under its exporter (a
    /// *base*), for every commit after which we are still a member; joiners
    /// pass it to `join_from_welcome`.
    pub ratchet_tree: Option<Py<PyBytes>>,
    /// What the commit changed in the tree, sealed under the new epoch's
    /// exporter (a *delta*, a few KB at any size; `tree_delta.rs`); with the
    /// base of an earlier epoch and the deltas after it a joiner rebuilds
    /// the tree (`join_from_welcome(..., tree_deltas=)`). Set when
    /// `ratchet_tree` is, except after an external commit (no previous
    /// epoch: `None`).
    pub tree_delta: Option<Py<PyBytes>>,
    /// The epoch the commit was made in (what `enqueueCommit` must name).
    pub epoch: u64,
}

#[pymethods]
impl CommitOutput {
    /// The Welcome split for delivery by reference: `(common, {key_package_ref:
    /// secrets})`; a joiner needs `common` (shared by all) and its own
    /// `secrets` (see `Client.join_from_welcome_parts`). MalformedInput if
    /// the commit has no Welcome.
    fn welcome_parts<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Py<PyBytes>, Bound<'py, pyo3::types::PyDict>)> {
        let welcome = self
            .welcome
            .as_ref()
            .ok_or_else(|| {
                PyErr::from(crate::error::Error::Malformed(
                    "this commit has no Welcome".into(),
                ))
            })?
            .bind(py)
            .as_bytes()
            .to_vec();
        crate::split_welcome_py(py, &welcome)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "CommitOutput(epoch={}, commit=<{} bytes>, welcome={}, group_info={})",
            self.epoch,
            self.commit.bind(py).as_bytes().len(),
            if self.welcome.is_some() {
                "<bytes>"
            } else {
                "None"
            },
            if self.group_info.is_some() {
                "<bytes>"
            } else {
                "None"
            }
        )
    }
}

pub struct CommitData {
    pub ratchet_tree: Option<Vec<u8>>,
    pub tree_delta: Option<Vec<u8>>,
    pub commit: Vec<u8>,
    pub welcome: Option<Vec<u8>>,
    pub group_info: Option<Vec<u8>>,
    pub epoch: u64,
}

impl CommitData {
    pub fn into_py(self, py: Python<'_>) -> PyResult<Py<CommitOutput>> {
        Py::new(
            py,
            CommitOutput {
                commit: pybytes(py, &self.commit),
                welcome: self.welcome.map(|w| pybytes(py, &w)),
                group_info: self.group_info.map(|g| pybytes(py, &g)),
                ratchet_tree: self.ratchet_tree.map(|t| pybytes(py, &t)),
                tree_delta: self.tree_delta.map(|t| pybytes(py, &t)),
                epoch: self.epoch,
            },
        )
    }
}

/// A decrypted application message.
#[pyclass(module = "proto._mls", frozen, get_all)]
pub struct ApplicationMessage {
    pub plaintext: Py<PyBytes>,
    pub sender_leaf: u32,
    pub sender_identity: Py<PyBytes>,
    pub epoch: u64,
    pub authenticated_data: Py<PyBytes>,
}

#[pymethods]
impl ApplicationMessage {
    fn __repr__(&self, py: Python<'_>) -> String {
        // Never show message content in a repr (it ends up in logs).
        format!(
            "ApplicationMessage(sender_leaf={}, epoch={}, plaintext=<{} bytes>)",
            self.sender_leaf,
            self.epoch,
            self.plaintext.bind(py).as_bytes().len()
        )
    }
}

/// An incoming commit that was validated, staged and merged.
#[pyclass(module = "proto._mls", frozen, get_all)]
pub struct CommitMerged {
    /// Committer's leaf index (None for an external joiner's commit).
    pub sender_leaf: Option<u32>,
    pub sender_identity: Py<PyBytes>,
    /// The group's epoch after the merge.
    pub epoch: u64,
    /// Members added by this commit (with their new leaf indices).
    pub added: Vec<Py<Member>>,
    /// Leaf indices removed by this commit.
    pub removed: Vec<u32>,
    /// True if this commit removed us; the group is now inactive.
    pub self_removed: bool,
}

#[pymethods]
impl CommitMerged {
    fn __repr__(&self) -> String {
        format!(
            "CommitMerged(sender_leaf={}, epoch={}, added={}, removed={:?}, self_removed={})",
            py_opt(self.sender_leaf),
            self.epoch,
            self.added.len(),
            self.removed,
            if self.self_removed { "True" } else { "False" }
        )
    }
}

/// An incoming proposal, stored until a commit covers it.
#[pyclass(module = "proto._mls", frozen, get_all)]
pub struct ProposalStored {
    pub sender_leaf: Option<u32>,
    pub sender_identity: Py<PyBytes>,
    pub epoch: u64,
    /// "add", "remove", "update", ... (lower case proposal type).
    pub kind: String,
}

#[pymethods]
impl ProposalStored {
    fn __repr__(&self) -> String {
        format!(
            "ProposalStored(sender_leaf={}, epoch={}, kind={:?})",
            py_opt(self.sender_leaf),
            self.epoch,
            self.kind
        )
    }
}

/// One of our own messages, echoed back by the node. Nothing to do.
#[pyclass(module = "proto._mls", frozen, get_all)]
pub struct OwnMessage {
    pub epoch: u64,
    /// "application", "proposal" or "commit".
    pub content_type: String,
}

#[pymethods]
impl OwnMessage {
    fn __repr__(&self) -> String {
        format!(
            "OwnMessage(epoch={}, content_type={:?})",
            self.epoch, self.content_type
        )
    }
}

/// Facts about a validated KeyPackage.
#[pyclass(module = "proto._mls", frozen, get_all)]
pub struct KeyPackageInfo {
    pub ciphersuite: u16,
    pub identity: Py<PyBytes>,
    pub signature_key: Py<PyBytes>,
    /// The KeyPackageRef (hash reference), unique per KeyPackage.
    pub hash_ref: Py<PyBytes>,
    pub last_resort: bool,
}

#[pymethods]
impl KeyPackageInfo {
    fn __repr__(&self) -> String {
        format!(
            "KeyPackageInfo(ciphersuite=0x{:04x}, last_resort={})",
            self.ciphersuite,
            if self.last_resort { "True" } else { "False" }
        )
    }
}

/// Cleartext framing facts about an MLS message (no decryption).
#[pyclass(module = "proto._mls", frozen, get_all)]
pub struct MessageInfo {
    /// "public_message", "private_message", "welcome", "group_info", "key_package".
    pub kind: String,
    pub group_id: Option<Py<PyBytes>>,
    pub epoch: Option<u64>,
    /// "application", "proposal", "commit" for protocol messages.
    pub content_type: Option<String>,
}

#[pymethods]
impl MessageInfo {
    fn __repr__(&self) -> String {
        format!(
            "MessageInfo(kind={:?}, epoch={}, content_type={})",
            self.kind,
            py_opt(self.epoch),
            py_opt(self.content_type.as_ref().map(|c| format!("{c:?}")))
        )
    }
}
