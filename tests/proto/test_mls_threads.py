"""Calls release the GIL and serialise per client: threads are safe."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from proto import mls
from tests.proto.mls_util import add, create_group, new_party


def test_concurrent_calls(tmp_path: Path) -> None:
    alice = new_party(tmp_path, "alice", mls.Ciphersuite.HYBRID)
    bob = new_party(tmp_path, "bob", mls.Ciphersuite.HYBRID)
    create_group(alice)
    add(alice, [bob], [])

    sent: list[bytes] = []
    lock = threading.Lock()

    def burst(tag: int) -> None:
        # 4 x 7 messages: fewer than the sender ratchet's out-of-order
        # tolerance (32), so Bob may read them in any order.
        for i in range(7):
            msg = alice.g.encrypt(f"{tag}:{i}".encode())
            with lock:
                sent.append(msg)

    with ThreadPoolExecutor(max_workers=4) as pool:
        # Alice's group is used from four threads at once, while other threads
        # work on unrelated clients (their own locks).
        others = [
            pool.submit(new_party(tmp_path, f"x{i}", 1).client.key_packages, 5) for i in range(2)
        ]
        list(pool.map(burst, range(4)))
        assert all(len(f.result()) == 5 for f in others)
    texts = set()
    for msg in reversed(sent):
        res = bob.g.process(msg)
        assert isinstance(res, mls.ApplicationMessage)
        texts.add(res.plaintext)
    assert len(texts) == 28
