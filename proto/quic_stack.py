"""The one place that chooses the QUIC library: aioquic (default) or qh3.

qh3 is the maintained aioquic fork with Rust-accelerated parts; its modules
mirror aioquic's, so the rest of ``proto`` imports the QUIC names from here and
never from either library. The stack is chosen once, at import time, by the
environment variable ``QPC_QUIC_STACK`` (``aioquic``, the default, or ``qh3``):
a process-wide choice, like the event loop, that every connection of the
process shares. The measured comparison and the decision are in
docs/perf/node.md ("Transport stack").

Transport tuning that reaches past the libraries' public API, and why:

* **Stream credit** (:func:`grant_stream_credit`). aioquic grants 128
  bidirectional streams and raises MAX_STREAMS in batches; a client with 64
  calls in flight (plus finished streams awaiting their ACK) kept opening
  blocked streams that waited a round trip for credit. Neither library's
  ``QuicConfiguration`` has a max-streams option, so the server raises
  aioquic's private ``_local_max_streams_bidi`` before the handshake sends the
  transport parameters. qh3 has no such attribute (its connection core is
  different) and keeps its own default: no-op there.
* **Delayed ACKs** (``proto.rpc.ack_now`` / ``ack_pending`` / ``hold_ack``).
  aioquic delays ACKs by 1 ms and bundles them only once due; these hooks move
  the 1-RTT space's ``ack_at`` (private ``_spaces``, ``_loss``, ``_ack_delay``)
  so answers carry ACKs instead of ACK-only datagrams, and skip packet
  building after a datagram that answered nothing. There is no public API for
  ACK scheduling in either library; the hooks read the private state with
  ``getattr`` defaults, so under qh3 (which has none of it) they do nothing.
* **Timer and transmit** (``proto.quic_server``): the server overrides
  ``transmit``/``_handle_timer`` and cancels the protocol's ``_transmit_task``
  (aioquic clears but does not cancel it, so a redundant transmit walks every
  stream again). These are protocol-class hooks that both libraries define
  identically; there is no public way to defer packet building.
* **Peer certificate** (:func:`peer_certificate`): aioquic exposes it only as
  the private ``tls._peer_certificate`` (a ``cryptography`` certificate); qh3
  exposes the public ``tls.peer_certificate`` (its own certificate type),
  converted here through DER so callers always get a ``cryptography`` object.
* **Protocol internals with no public equivalent**: ``_quic`` (the
  connection a ``QuicConnectionProtocol`` drives), ``_loop``,
  ``_process_events`` and ``_transmit_soon`` (the client defers its transmit
  to the next loop turn so answers and the next requests share one packet
  build). Both libraries name them the same; subclassing the protocol is
  aioquic's documented extension point and these are what a subclass uses.
  The UDP transport, which both keep privately as ``_transport``, is kept by
  our own ``connection_made`` in :mod:`proto.quic_client` instead.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from cryptography import x509

STACKS = ("aioquic", "qh3")
STACK_ENV = "QPC_QUIC_STACK"


def _chosen() -> str:
    name = os.environ.get(STACK_ENV, "aioquic").strip().lower() or "aioquic"
    if name not in STACKS:
        raise ImportError(f"{STACK_ENV}={name!r}: expected one of {', '.join(STACKS)}")
    return name


STACK = _chosen()
"""The QUIC library this process uses: ``"aioquic"`` or ``"qh3"``."""

if TYPE_CHECKING or STACK == "aioquic":
    from aioquic._buffer import Buffer
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.asyncio.server import QuicServer
    from aioquic.quic import events
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.packet import pull_quic_header
    from aioquic.tls import Epoch
else:  # pragma: no cover - exercised by the qh3-parametrised transport tests
    from qh3._hazmat import Buffer
    from qh3.asyncio.protocol import QuicConnectionProtocol
    from qh3.asyncio.server import QuicServer
    from qh3.quic import events
    from qh3.quic.configuration import QuicConfiguration
    from qh3.quic.connection import QuicConnection
    from qh3.quic.packet import pull_quic_header
    from qh3.tls import Epoch

__all__ = [
    "STACK",
    "STACKS",
    "STACK_ENV",
    "Buffer",
    "Epoch",
    "QuicConfiguration",
    "QuicConnection",
    "QuicConnectionProtocol",
    "QuicServer",
    "close_connection",
    "events",
    "grant_stream_credit",
    "peer_certificate",
    "pull_quic_header",
]


def grant_stream_credit(quic: Any, streams: int) -> None:
    """Grant the peer at least ``streams`` concurrent bidirectional streams.

    Call before the handshake (the value goes into the transport parameters).
    aioquic only (private state, see the module docstring); a no-op on qh3.
    """
    credit = getattr(quic, "_local_max_streams_bidi", None)
    if credit is not None:
        credit.value = credit.sent = max(credit.value, streams)


def close_connection(protocol: Any, error_code: int, reason: str) -> None:
    """Close ``protocol``'s connection with an application error code and send it.

    aioquic's ``QuicConnectionProtocol.close`` takes the code; qh3's takes
    nothing, so this goes through the connection object both expose.
    """
    protocol._quic.close(error_code=error_code, reason_phrase=reason)
    protocol.transmit()


def peer_certificate(quic: Any) -> x509.Certificate | None:
    """The certificate the peer presented, as a ``cryptography`` object."""
    tls = quic.tls
    if STACK == "aioquic":
        cert: x509.Certificate | None = tls._peer_certificate
        return cert
    raw = tls.peer_certificate
    return None if raw is None else x509.load_der_x509_certificate(raw.public_bytes())
