//! `Group`: a handle on one MLS group of a client. The group state lives in
//! the client (one in-memory copy per group id) and in its storage.

use openmls::messages::group_info::GroupInfo;
use openmls::prelude::*;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::core::{
    identity_of, join_config_with_tree, parse_message, run, run_write, validate_key_package,
    Shared, SigningKey, MAX_PAST_EPOCHS,
};
use crate::error::{local, remote, Error, Result};
use crate::provider::QpcProvider;
use crate::receipt::{self, Processed};
use crate::tree_delta::seal_delta;
use crate::types::{
    members_into_py, pybytes, ApplicationMessage, CommitData, CommitMerged, CommitOutput, Member,
    MemberData, OwnMessage, ProposalStored,
};
use crate::welcome::{seal_tree, TREE_LABEL};

/// A handle on one MLS group of a Client.
///
/// Commit-producing methods return a CommitOutput and leave the commit
/// pending: send it, then call merge_pending_commit (node accepted) or
/// clear_pending_commit (node rejected).
#[pyclass(module = "proto._mls", frozen)]
pub struct Group {
    shared: Shared,
    group_id: Vec<u8>,
}

impl Group {
    pub fn new(shared: Shared, group_id: Vec<u8>) -> Self {
        Group { shared, group_id }
    }

    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut MlsGroup, &QpcProvider, &SigningKey) -> Result<T> + Send,
    ) -> PyResult<T> {
        let gid = &self.group_id;
        run(py, &self.shared, |core| core.with_group(gid, f))
    }

    /// Like `with`, in one transaction (see `core::run_write`).
    fn with_write<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut MlsGroup, &QpcProvider, &SigningKey) -> Result<T> + Send,
    ) -> PyResult<T> {
        let gid = &self.group_id;
        run_write(py, &self.shared, |core| {
            core.end_reservation(gid);
            core.with_group(gid, f)
        })
    }

    /// Like `with`, for operations that produce a commit: the commit's digest
    /// is remembered so its echo is recognised as our own.
    fn with_commit(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut MlsGroup, &QpcProvider, &SigningKey) -> Result<CommitData> + Send,
    ) -> PyResult<Py<CommitOutput>> {
        let gid = &self.group_id;
        let data = run_write(py, &self.shared, |core| {
            core.end_reservation(gid);
            let data = core.with_group(gid, f)?;
            core.remember_sent(&data.commit)?;
            Ok(data)
        })?;
        data.into_py(py)
    }
}

fn member_data(m: OpenMlsMember) -> MemberData {
    MemberData {
        leaf_index: m.index.u32(),
        identity: identity_of(&m.credential),
        signature_key: m.signature_key,
    }
}

/// OpenMLS's member record (our Python-facing one is `types::Member`).
type OpenMlsMember = openmls::group::Member;

/// Make the group's next commit put the ratchet tree into its Welcome and
/// GroupInfo, or not (stored config; groups created before the tree went
/// out of band have it on).
/// (OpenMLS has no getter for the flag: the small config row is rewritten
/// with each commit.)
fn tree_in_welcome(g: &mut MlsGroup, p: &QpcProvider, on: bool) -> Result<()> {
    g.set_configuration(p.storage(), &join_config_with_tree(on))
        .map_err(|e| Error::Storage(e.to_string()))
}

/// The tree parts of the epoch our pending commit moves to: the whole
/// tree sealed under that epoch's exporter (`welcome.rs`) and the delta
/// from the current tree (`tree_delta.rs`); `None` if the commit removes us.
fn pending_tree_parts(g: &MlsGroup, p: &QpcProvider) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    let staged = g
        .pending_commit()
        .ok_or_else(|| Error::Crypto("no pending commit".into()))?;
    let before = g.export_ratchet_tree();
    let Some(after) = staged
        .export_ratchet_tree(p.crypto(), before.clone())
        .map_err(local)?
    else {
        return Ok(None);
    };
    let key = zeroize::Zeroizing::new(
        staged
            .export_secret(p.crypto(), TREE_LABEL, &[], 32)
            .map_err(local)?,
    );
    let prev_key = zeroize::Zeroizing::new(
        g.export_secret(p.crypto(), TREE_LABEL, &[], 32)
            .map_err(local)?,
    );
    let (gid, epoch) = (g.group_id().as_slice(), staged.epoch().as_u64());
    let whole = seal_tree(&after, &key, gid, epoch)?;
    let delta = seal_delta(&before, &after, &prev_key, &key, gid, epoch)?;
    Ok(Some((whole, delta)))
}

/// The current ratchet tree, sealed under the current epoch's exporter.
fn current_tree(g: &MlsGroup, p: &QpcProvider) -> Result<Vec<u8>> {
    let key = zeroize::Zeroizing::new(
        g.export_secret(p.crypto(), TREE_LABEL, &[], 32)
            .map_err(local)?,
    );
    seal_tree(
        &g.export_ratchet_tree(),
        &key,
        g.group_id().as_slice(),
        g.epoch().as_u64(),
    )
}

fn commit_data(
    g: &MlsGroup,
    p: &QpcProvider,
    commit: MlsMessageOut,
    welcome: Option<MlsMessageOut>,
    group_info: Option<GroupInfo>,
    epoch: u64,
) -> Result<CommitData> {
    let (ratchet_tree, tree_delta) = pending_tree_parts(g, p)?.unzip();
    Ok(CommitData {
        ratchet_tree,
        tree_delta,
        commit: commit.to_bytes()?,
        welcome: welcome.map(|w| w.to_bytes()).transpose()?,
        group_info: group_info
            .map(|g| MlsMessageOut::from(g).to_bytes())
            .transpose()?,
        epoch,
    })
}

fn content_type_name(ct: ContentType) -> &'static str {
    match ct {
        ContentType::Application => "application",
        ContentType::Proposal => "proposal",
        ContentType::Commit => "commit",
    }
}

fn proposal_kind(p: &Proposal) -> String {
    let t = p.proposal_type();
    match t {
        ProposalType::Add => "add".into(),
        ProposalType::Update => "update".into(),
        ProposalType::Remove => "remove".into(),
        ProposalType::PreSharedKey => "psk".into(),
        ProposalType::Reinit => "reinit".into(),
        ProposalType::ExternalInit => "external_init".into(),
        ProposalType::GroupContextExtensions => "group_context_extensions".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn sender_leaf(sender: &Sender) -> Option<u32> {
    match sender {
        Sender::Member(idx) => Some(idx.u32()),
        _ => None,
    }
}

/// Process `data`; `may_defer`: an application message may leave its
/// message-secrets write deferred (returned flag says whether it did).
fn process(
    group: &mut MlsGroup,
    provider: &QpcProvider,
    data: &[u8],
    may_defer: bool,
) -> Result<(Processed, bool)> {
    let msg = parse_message(data)?;
    let protocol = msg
        .try_into_protocol_message()
        .map_err(|_| Error::Malformed("not a PublicMessage or PrivateMessage".into()))?;
    if protocol.group_id() != group.group_id() {
        return Err(Error::Invalid("the message is for another group".into()));
    }
    let content_type = content_type_name(protocol.content_type());
    let (msg_epoch, cur) = (protocol.epoch().as_u64(), group.epoch().as_u64());
    // OpenMLS reports "secrets of this epoch are gone" and "this generation
    // is too old" with the same error; the epoch numbers tell them apart.
    if msg_epoch < cur.saturating_sub(MAX_PAST_EPOCHS as u64) || msg_epoch > cur {
        return Err(Error::WrongEpoch(format!(
            "message of epoch {msg_epoch}, group at epoch {cur} (keeps {MAX_PAST_EPOCHS} past epochs)"
        )));
    }
    let defer = (may_defer && protocol.content_type() == ContentType::Application)
        .then(crate::codec::DeferScope::enter);
    let processed = group.process_message(provider, protocol).map_err(remote)?;
    let deferred = defer.as_ref().is_some_and(|d| d.deferred());
    drop(defer);
    let epoch = processed.epoch().as_u64();
    let leaf = sender_leaf(processed.sender());
    let identity = identity_of(processed.credential());
    let aad = processed.aad().to_vec();
    let result = match processed.into_content() {
        ProcessedMessageContent::ApplicationMessage(app) => Processed::Application {
            plaintext: app.into_bytes(),
            sender_leaf: leaf
                .ok_or_else(|| Error::Invalid("application message from a non-member".into()))?,
            sender_identity: identity,
            epoch,
            aad,
        },
        ProcessedMessageContent::ProposalMessage(qp)
        | ProcessedMessageContent::ExternalJoinProposalMessage(qp) => {
            let kind = proposal_kind(qp.proposal());
            group
                .store_pending_proposal(provider.storage(), *qp)
                .map_err(local)?;
            Processed::Proposal {
                sender_leaf: leaf,
                sender_identity: identity,
                epoch,
                kind,
            }
        }
        ProcessedMessageContent::StagedCommitMessage(staged) => {
            let mut added_keys: Vec<Vec<u8>> = staged
                .add_proposals()
                .map(|p| {
                    p.add_proposal()
                        .key_package()
                        .leaf_node()
                        .signature_key()
                        .as_slice()
                        .to_vec()
                })
                .collect();
            if leaf.is_none() {
                // An external joiner adds itself through its update path.
                if let Some(ln) = staged.update_path_leaf_node() {
                    added_keys.push(ln.signature_key().as_slice().to_vec());
                }
            }
            let removed: Vec<u32> = staged
                .remove_proposals()
                .map(|p| p.remove_proposal().removed().u32())
                .collect();
            let self_removed = staged.self_removed();
            group
                .merge_staged_commit(provider, *staged)
                .map_err(local)?;
            let added = group
                .members()
                .filter(|m| added_keys.contains(&m.signature_key))
                .map(member_data)
                .collect();
            Processed::Commit {
                sender_leaf: leaf,
                sender_identity: identity,
                epoch: group.epoch().as_u64(),
                added,
                removed,
                self_removed,
            }
        }
        ProcessedMessageContent::OwnPrivateMessage | ProcessedMessageContent::OwnPendingCommit => {
            Processed::Own {
                epoch,
                content_type: content_type.to_string(),
            }
        }
    };
    Ok((result, deferred))
}

#[pymethods]
impl Group {
    /// The group id.
    #[getter]
    fn group_id<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.group_id)
    }

    /// The current epoch.
    #[getter]
    fn epoch(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |g, _, _| Ok(g.epoch().as_u64()))
    }

    /// The group's ciphersuite code point.
    #[getter]
    fn ciphersuite(&self, py: Python<'_>) -> PyResult<u16> {
        self.with(py, |g, _, _| Ok(g.ciphersuite().into()))
    }

    /// Our leaf index in the ratchet tree.
    #[getter]
    fn own_leaf_index(&self, py: Python<'_>) -> PyResult<u32> {
        self.with(py, |g, _, _| Ok(g.own_leaf_index().u32()))
    }

    /// False once we have been removed.
    #[getter]
    fn is_active(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |g, _, _| Ok(g.is_active()))
    }

    /// True while one of our commits awaits merge or clear.
    #[getter]
    fn has_pending_commit(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |g, _, _| Ok(g.pending_commit().is_some()))
    }

    /// Number of stored proposals not yet committed.
    #[getter]
    fn pending_proposal_count(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |g, _, _| Ok(g.pending_proposals().count()))
    }

    /// The current members.
    fn members(&self, py: Python<'_>) -> PyResult<Vec<Py<Member>>> {
        let members = self.with(py, |g, _, _| Ok(g.members().map(member_data).collect()))?;
        members_into_py(py, members)
    }

    /// Add members from their KeyPackages (commit + Welcome + sealed
    /// ratchet tree). `ratchet_tree_in_welcome=True` puts the tree into the
    /// Welcome instead (small groups, peers that cannot fetch it).
    /// `update_path=False` builds an add-only commit without an UpdatePath
    /// (RFC 9420 §12.4: a path is optional when only Adds are committed):
    /// the commit is the Add proposals only, a few KB at any group size,
    /// instead of one HPKE ciphertext per resolution node of the tree.
    #[pyo3(signature = (key_packages, *, ratchet_tree_in_welcome=false, update_path=true))]
    fn add_members(
        &self,
        py: Python<'_>,
        key_packages: Vec<Vec<u8>>,
        ratchet_tree_in_welcome: bool,
        update_path: bool,
    ) -> PyResult<Py<CommitOutput>> {
        self.with_commit(py, |g, p, s| {
            tree_in_welcome(g, p, ratchet_tree_in_welcome)?;
            if key_packages.is_empty() {
                return Err(Error::Malformed("no KeyPackages given".into()));
            }
            let kps = key_packages
                .iter()
                .map(|kp| validate_key_package(p.crypto(), kp))
                .collect::<Result<Vec<_>>>()?;
            let epoch = g.epoch().as_u64();
            let (commit, welcome, gi) = if update_path {
                g.add_members(p, s, &kps).map_err(local)?
            } else {
                g.add_members_without_update(p, s, &kps).map_err(local)?
            };
            commit_data(g, p, commit, Some(welcome), gi, epoch)
        })
    }

    /// Remove the members at these leaf indices.
    fn remove_members(&self, py: Python<'_>, leaf_indices: Vec<u32>) -> PyResult<Py<CommitOutput>> {
        self.with_commit(py, |g, p, s| {
            if leaf_indices.is_empty() {
                return Err(Error::Malformed("no leaf indices given".into()));
            }
            let mut leaves = Vec::with_capacity(leaf_indices.len());
            for &i in &leaf_indices {
                let idx = LeafNodeIndex::new(i);
                if g.member_at(idx).is_none() {
                    return Err(Error::NotAMember(format!("no member at leaf {i}")));
                }
                leaves.push(idx);
            }
            let epoch = g.epoch().as_u64();
            tree_in_welcome(g, p, false)?;
            let (commit, welcome, gi) = g.remove_members(p, s, &leaves).map_err(local)?;
            commit_data(g, p, commit, welcome, gi, epoch)
        })
    }

    /// Refresh our leaf's keys (post-compromise security).
    fn self_update(&self, py: Python<'_>) -> PyResult<Py<CommitOutput>> {
        self.with_commit(py, |g, p, s| {
            let epoch = g.epoch().as_u64();
            tree_in_welcome(g, p, false)?;
            let bundle = g
                .self_update(p, s, LeafNodeParameters::default())
                .map_err(local)?;
            let welcome = bundle.to_welcome_msg();
            let (commit, _, gi) = bundle.into_contents();
            commit_data(g, p, commit, welcome, gi, epoch)
        })
    }

    /// Commit the stored proposals (e.g. another member's leave).
    fn commit_pending_proposals(&self, py: Python<'_>) -> PyResult<Py<CommitOutput>> {
        self.with_commit(py, |g, p, s| {
            let epoch = g.epoch().as_u64();
            tree_in_welcome(g, p, false)?;
            let (commit, welcome, gi) = g.commit_to_pending_proposals(p, s).map_err(local)?;
            commit_data(g, p, commit, welcome, gi, epoch)
        })
    }

    /// A proposal removing us; another member must commit it.
    fn leave(&self, py: Python<'_>) -> PyResult<Py<PyBytes>> {
        let gid = &self.group_id;
        let out = run_write(py, &self.shared, |core| {
            core.end_reservation(gid);
            let out = core.with_group(gid, |g, p, s| {
                let msg = g.leave_group(p, s).map_err(local)?;
                Ok(msg.to_bytes()?)
            })?;
            core.remember_sent(&out)?;
            Ok(out)
        })?;
        Ok(pybytes(py, &out))
    }

    /// Merge our pending commit (after the node accepted it); a no-op when
    /// nothing is pending.
    fn merge_pending_commit(&self, py: Python<'_>) -> PyResult<()> {
        self.with_write(py, |g, p, _| {
            // No pending commit (e.g. after an external join): nothing to do.
            g.merge_pending_commit(p).map_err(local)
        })
    }

    /// Drop our pending commit (after the node rejected it).
    fn clear_pending_commit(&self, py: Python<'_>) -> PyResult<()> {
        self.with_write(py, |g, p, _| {
            g.clear_pending_commit(p.storage()).map_err(local)
        })
    }

    /// Encrypt an application message for the group. `defer_write=True`
    /// writes the message-secrets entity once per `SEND_RESERVE` sends
    /// instead of each time, under a reservation of sender generations
    /// stored ahead (docs/MLS.md, "Senders": no key is reused after a
    /// crash; receivers may see a gap).
    #[pyo3(signature = (plaintext, *, defer_write=false))]
    fn encrypt(
        &self,
        py: Python<'_>,
        plaintext: &[u8],
        defer_write: bool,
    ) -> PyResult<Py<PyBytes>> {
        let gid = &self.group_id;
        let out = run_write(py, &self.shared, |core| {
            if defer_write {
                return core.encrypt_reserved(gid, plaintext);
            }
            let out = core.with_group(gid, |g, p, s| {
                let msg = g.create_message(p, s, plaintext).map_err(local)?;
                Ok(msg.to_bytes()?)
            })?;
            // Encrypting wrote the whole message-secrets entity.
            core.note_deferred(gid, false);
            Ok(out)
        })?;
        Ok(pybytes(py, &out))
    }

    /// Process an incoming message: ApplicationMessage, CommitMerged (the
    /// commit was validated and merged), ProposalStored or OwnMessage.
    /// `receipt=seq` stores the result under the caller's delivery sequence
    /// number in the same transaction (until `Client.forget_receipts`), and
    /// returns the stored result, without processing, when `seq` already
    /// has one (docs/MLS.md, "Receipts"). `defer_write=True` lets an
    /// application message leave OpenMLS's message-secrets write deferred
    /// (docs/MLS.md, "Receivers"): much faster in large groups, but after a
    /// crash the last (<= 63) messages decrypt again, so the caller must
    /// de-duplicate (receipts plus its own cursor do).
    #[pyo3(signature = (message, *, defer_write=false, receipt=None))]
    fn process(
        &self,
        py: Python<'_>,
        message: &[u8],
        defer_write: bool,
        receipt: Option<u64>,
    ) -> PyResult<Py<PyAny>> {
        let gid = &self.group_id;
        let processed = run_write(py, &self.shared, |core| {
            if let Some(seq) = receipt {
                if let Some(stored) = receipt::load(&core.db, seq, message)? {
                    if matches!(stored, Processed::Joined { .. }) {
                        return Err(Error::Invalid(format!(
                            "receipt {seq} is a join, not a processed message"
                        )));
                    }
                    return Ok(stored);
                }
            }
            let processed = if core.was_sent(message)? {
                let info = parse_message(message)?
                    .try_into_protocol_message()
                    .map_err(|_| Error::Malformed("not a protocol message".into()))?;
                Processed::Own {
                    epoch: info.epoch().as_u64(),
                    content_type: content_type_name(info.content_type()).to_string(),
                }
            } else {
                let may_defer = defer_write && core.may_defer(gid);
                let (processed, deferred) =
                    core.with_group(gid, |g, p, _| process(g, p, message, may_defer))?;
                // Own messages are recognised without decrypting (nothing
                // written); everything else wrote the entity unless deferred.
                if !matches!(processed, Processed::Own { .. }) {
                    core.note_deferred(gid, deferred);
                }
                processed
            };
            match receipt {
                Some(seq) => receipt::store(&core.db, seq, message, processed),
                None => Ok(processed),
            }
        })?;
        Ok(match processed {
            Processed::Application {
                plaintext,
                sender_leaf,
                sender_identity,
                epoch,
                aad,
            } => Py::new(
                py,
                ApplicationMessage {
                    plaintext: pybytes(py, &plaintext),
                    sender_leaf,
                    sender_identity: pybytes(py, &sender_identity),
                    epoch,
                    authenticated_data: pybytes(py, &aad),
                },
            )?
            .into_any(),
            Processed::Commit {
                sender_leaf,
                sender_identity,
                epoch,
                added,
                removed,
                self_removed,
            } => Py::new(
                py,
                CommitMerged {
                    sender_leaf,
                    sender_identity: pybytes(py, &sender_identity),
                    epoch,
                    added: members_into_py(py, added)?,
                    removed,
                    self_removed,
                },
            )?
            .into_any(),
            Processed::Proposal {
                sender_leaf,
                sender_identity,
                epoch,
                kind,
            } => Py::new(
                py,
                ProposalStored {
                    sender_leaf,
                    sender_identity: pybytes(py, &sender_identity),
                    epoch,
                    kind,
                },
            )?
            .into_any(),
            Processed::Own {
                epoch,
                content_type,
            } => Py::new(
                py,
                OwnMessage {
                    epoch,
                    content_type,
                },
            )?
            .into_any(),
            Processed::Joined { .. } => {
                return Err(Error::Crypto("a join is not a processed message".into()).into())
            }
        })
    }

    /// MLS exporter: a secret of `length` bytes for `label` and `context`.
    fn export_secret(
        &self,
        py: Python<'_>,
        label: &str,
        context: &[u8],
        length: usize,
    ) -> PyResult<Py<PyBytes>> {
        let out = self.with(py, |g, p, _| {
            if length == 0 || length > 255 * 32 {
                return Err(Error::Crypto(format!("unsupported secret length {length}")));
            }
            g.export_secret(p.crypto(), label, context, length)
                .map_err(local)
        })?;
        Ok(pybytes(py, &out))
    }

    /// The epoch authenticator (compare out of band to detect forks/MITM).
    fn epoch_authenticator(&self, py: Python<'_>) -> PyResult<Py<PyBytes>> {
        let out = self.with(py, |g, _, _| {
            Ok(g.epoch_authenticator().as_slice().to_vec())
        })?;
        Ok(pybytes(py, &out))
    }

    /// A signed GroupInfo for external joins.
    #[pyo3(signature = (with_ratchet_tree=true))]
    fn export_group_info(&self, py: Python<'_>, with_ratchet_tree: bool) -> PyResult<Py<PyBytes>> {
        let out = self.with(py, |g, p, s| {
            let msg = g
                .export_group_info(p.crypto(), s, with_ratchet_tree)
                .map_err(local)?;
            Ok(msg.to_bytes()?)
        })?;
        Ok(pybytes(py, &out))
    }

    /// The current epoch's ratchet tree, sealed under the epoch's exporter
    /// (what a joiner without the tree in its Welcome needs; the node that
    /// stores it cannot read it).
    fn export_ratchet_tree(&self, py: Python<'_>) -> PyResult<Py<PyBytes>> {
        let out = self.with(py, |g, p, _| current_tree(g, p))?;
        Ok(pybytes(py, &out))
    }

    /// Delete this group's state from storage.
    fn delete(&self, py: Python<'_>) -> PyResult<()> {
        let gid = &self.group_id;
        run_write(py, &self.shared, |core| core.delete_group(gid))
    }

    fn __repr__(&self) -> String {
        format!("Group(group_id=<{} bytes>)", self.group_id.len())
    }
}
