"""MLS (RFC 9420) for quicnprotochat: the public face of the OpenMLS binding.

The native module :mod:`proto._mls` (built from ``rust/``) is an
implementation detail; import names from here. Every MLS message crosses the
boundary as ``bytes`` in the MLSMessage encoding, ready to be sealed and sent.

Model:

* A :class:`Client` is one device's MLS state in one SQLite file, opened with a
  32-byte storage key. Every value in the file (signature key, HPKE keys,
  group secrets, ratchet trees) is encrypted with XChaCha20-Poly1305 under a
  key derived from it. The client's Ed25519 signing key and credential
  identity (chosen by the caller) are stored there too, so
  ``Client.open(path, key)`` after a restart continues where it stopped,
  including joining from a Welcome for a KeyPackage published before.
* A :class:`Group` is a handle on one group of that client. Commits are
  *pending* until the caller decides: :meth:`Group.merge_pending_commit`
  after the node accepted the commit (``enqueueCommit`` succeeded),
  :meth:`Group.clear_pending_commit` after it was rejected (``staleEpoch``),
  so a group never wedges. Incoming commits are validated, staged and merged
  by :meth:`Group.process`.
* Welcomes do not carry the ratchet tree: every commit after which we are
  still a member returns :attr:`CommitOutput.ratchet_tree`, the new epoch's
  tree sealed under that epoch's MLS exporter (the node storing it cannot
  read it), and :attr:`CommitOutput.tree_delta`, what the commit changed in
  it, sealed the same way (a few KB at any group size). Joiners pass to
  :meth:`Client.join_from_welcome` the tree of their epoch, or the tree of an
  earlier epoch (a *base*) with ``tree_deltas=`` the deltas of the epochs
  after it (docs/MLS.md, "Tree deltas"). For many joiners,
  :func:`split_welcome` / :meth:`CommitOutput.welcome_parts` give the part all
  joiners share once and each joiner's small secrets part, keyed by its
  KeyPackageRef; :meth:`Client.join_from_welcome_parts` joins from them.
* :meth:`Group.process` returns one of :class:`ApplicationMessage`,
  :class:`CommitMerged`, :class:`ProposalStored` or :class:`OwnMessage` (our
  own message echoed back by the node: nothing to do).
  With ``receipt=seq`` (also on the joins) the result is stored in the same
  transaction as the state change and returned again, without processing,
  for the same message under the same seq until
  :meth:`Client.forget_receipts` (docs/MLS.md, "Receipts").

Errors are the :class:`proto.errors.MlsError` family (``MalformedInput``,
``InvalidMessage``, ``WrongEpoch``, ``NotAMember``, ``UnknownGroup``,
``StorageFailure``, ``UnsupportedCiphersuite``, ``PendingCommit``,
``NoWelcomeForUs``, ``MlsCryptoError``); no input makes the binding panic.

Calls release the GIL while OpenMLS works, so they may be run in a worker
thread (``asyncio.to_thread``). One client's calls are serialised internally.
"""

from __future__ import annotations

import enum
from typing import TypeAlias

from proto._mls import (
    CIPHERSUITE_CLASSICAL,
    CIPHERSUITE_HYBRID,
    DEFAULT_CIPHERSUITE,
    MAX_MESSAGE_BYTES,
    MAX_PAST_EPOCHS,
    ApplicationMessage,
    Client,
    CommitMerged,
    CommitOutput,
    Group,
    KeyPackageInfo,
    Member,
    MessageInfo,
    OwnMessage,
    ProposalStored,
    message_info,
    openmls_version,
    parse_key_package,
    split_welcome,
    supported_ciphersuites,
)

__all__ = [
    "CIPHERSUITE_CLASSICAL",
    "CIPHERSUITE_HYBRID",
    "DEFAULT_CIPHERSUITE",
    "MAX_MESSAGE_BYTES",
    "MAX_PAST_EPOCHS",
    "STORAGE_KEY_BYTES",
    "ApplicationMessage",
    "Ciphersuite",
    "Client",
    "CommitMerged",
    "CommitOutput",
    "Group",
    "KeyPackageInfo",
    "Member",
    "MessageInfo",
    "OwnMessage",
    "ProcessResult",
    "ProposalStored",
    "message_info",
    "openmls_version",
    "parse_key_package",
    "split_welcome",
    "supported_ciphersuites",
]

#: Length of the storage key passed to :meth:`Client.create` / :meth:`Client.open`.
STORAGE_KEY_BYTES = 32

#: What :meth:`Group.process` returns.
ProcessResult: TypeAlias = ApplicationMessage | CommitMerged | ProposalStored | OwnMessage


class Ciphersuite(enum.IntEnum):
    """MLS ciphersuites this build supports (IANA / draft code points).

    ``HYBRID`` is the default: X-Wing KEM (X25519 + ML-KEM-768) for HPKE,
    AES-128-GCM, SHA-256, Ed25519 signatures; its code point is provisional
    (draft-ietf-mls-pq-ciphersuites, as pinned by OpenMLS 0.9.2) and may move,
    which is why crate versions are pinned and test vectors are committed.
    ``CLASSICAL`` is RFC 9420's mandatory-to-implement suite, for interop.
    """

    HYBRID = CIPHERSUITE_HYBRID
    CLASSICAL = CIPHERSUITE_CLASSICAL

    @property
    def iana_name(self) -> str:
        """The ciphersuite's registered (or draft) name."""
        return _NAMES[self]


_NAMES = {
    Ciphersuite.HYBRID: "MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519",
    Ciphersuite.CLASSICAL: "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519",
}
