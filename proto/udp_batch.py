"""The one place that sends a connection's datagrams: several per syscall (UDP GSO).

aioquic hands a protocol the datagrams of one transmit as a list and its
``transmit()`` calls ``sendto`` once per datagram; a node answering a group
commit's batch of calls sends several full datagrams to one client at once,
and each ``sendto`` is a syscall (a third of the node's event-loop time under
load, docs/perf/node.md). :class:`DatagramBatcher` sends each run of
datagrams to one address that all have one size (the last may be shorter) in
one ``sendmsg`` with Linux's ``UDP_SEGMENT`` option: the kernel cuts the
buffer into the same datagrams, so the peer sees exactly what ``sendto``
would have sent.

It writes on a duplicate of the server's socket (``TransportSocket.dup()``,
public), so it never passes data the asyncio transport still buffers: when
the transport has anything queued, or the socket would block, the datagrams
go through ``transport.sendto`` as before. A kernel that refuses the option
(no GSO: ``EINVAL``/``EIO``/``ENOPROTOOPT``) turns batching off for good.

Chosen by :func:`open_batcher`: on unless the environment variable
``QPC_UDP_GSO`` is ``off`` (a process-wide choice, like ``QPC_QUIC_STACK``;
``bench/transport.py`` compares both in one run).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any

GSO_ENV = "QPC_UDP_GSO"
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
"""Linux ``UDP_SEGMENT`` (``linux/udp.h``); Python names it only on some builds."""
MAX_SEGMENTS = 64
"""Most datagrams per ``sendmsg`` (the kernel's ``UDP_MAX_SEGMENTS``)."""
MAX_BYTES = 65_000
"""Most bytes per ``sendmsg`` (one UDP payload: 65,535 minus the headers)."""
_UNSUPPORTED = (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP)

Datagrams = Sequence[tuple[bytes, Any]]


def _zero() -> int:
    return 0


class DatagramBatcher:
    """Sends datagrams on one UDP transport, equal-size runs per ``sendmsg``."""

    def __init__(self, transport: asyncio.DatagramTransport, sock: socket.socket) -> None:
        """Use :func:`open_batcher`."""
        self._transport = transport
        self._sock = sock
        # asyncio's datagram transports have it; the type stubs name it only on
        # write transports. Without it, nothing is known queued: batch always.
        self._queued: Callable[[], int] = getattr(transport, "get_write_buffer_size", _zero)
        self.enabled = True
        """False once the kernel refused ``UDP_SEGMENT`` (then every datagram uses ``sendto``)."""
        self.syscalls_saved = 0
        """Datagrams sent beyond the first of their ``sendmsg`` (for benchmarks and tests)."""

    def send(self, datagrams: Datagrams) -> None:
        """Send ``datagrams`` in order, as ``transport.sendto`` one by one would."""
        transport = self._transport
        n = len(datagrams)
        if n == 1 or not self.enabled or self._queued():
            for data, addr in datagrams:
                transport.sendto(data, addr)
            return
        i = 0
        while i < n:
            data, addr = datagrams[i]
            size = len(data)
            most = min(MAX_SEGMENTS, MAX_BYTES // max(size, 1))
            j = i + 1
            while j < n and j - i < most:
                nxt, to = datagrams[j]
                if to != addr or len(nxt) > size:
                    break
                j += 1
                if len(nxt) < size:  # a shorter one ends a run
                    break
            if j - i == 1 or not self._sendmsg(datagrams, i, j, size, addr):
                for k in range(i, j):
                    transport.sendto(*datagrams[k])
            i = j

    def _sendmsg(self, datagrams: Datagrams, i: int, j: int, size: int, addr: Any) -> bool:
        """One ``sendmsg`` of ``datagrams[i:j]``; False when they must go by ``sendto``."""
        buf = b"".join(d for d, _ in datagrams[i:j])
        try:
            self._sock.sendmsg(
                [buf], [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))], 0, addr
            )
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno in _UNSUPPORTED:
                self.enabled = False
                return False
            # what sendto would meet too (e.g. unreachable): it reports it, we drop
            # the datagrams like a lossy network would; QUIC retransmits
            return True
        self.syscalls_saved += j - i - 1
        return True

    def close(self) -> None:
        """Close the duplicate socket (the transport's own socket stays open)."""
        self.enabled = False
        self._sock.close()


def open_batcher(transport: asyncio.DatagramTransport) -> DatagramBatcher | None:
    """A batcher for ``transport``'s socket, or None (``QPC_UDP_GSO=off``, or no
    socket to duplicate, e.g. a transport that is not a plain UDP socket)."""
    if os.environ.get(GSO_ENV, "on").lower() in ("off", "0", "no"):
        return None
    tsock = transport.get_extra_info("socket")
    if tsock is None or tsock.type != socket.SOCK_DGRAM:
        return None
    try:
        sock = tsock.dup()
    except OSError:
        return None
    sock.setblocking(False)
    return DatagramBatcher(transport, sock)
