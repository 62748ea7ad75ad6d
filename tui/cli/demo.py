"""``qpc demo-group``: a throwaway node and three profiles, every step printed.

Builds a group (alice creates, invites bob and carol), everybody sends and
receives, alice removes carol, alice sends again, and carol's engine shows it
can no longer read the channel. Everything lives in a temporary directory that
is deleted at the end, node included.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from proto import files
from proto.crypto.atrest import FAST_TEST_PARAMS
from proto.errors import QpcError
from tui.cli.main import Options, emit
from tui.client.core import EngineConfig
from tui.client.engine import Engine
from tui.client.localnode import ensure_local_node, stop_local_node

__all__ = ["run_demo"]

_PASS = "demo passphrase"  # noqa: S105 (throwaway demo profiles)


async def run_demo(opts: Options) -> None:
    """Run the scripted demo, printing each step (``--json``: one object per step)."""
    steps: list[dict[str, object]] = []

    def say(text: str, **data: object) -> None:
        steps.append({"step": text, **data})
        if not opts.json:
            emit(opts, text, None)

    with tempfile.TemporaryDirectory(prefix="qpc-demo-") as tmp:
        base = Path(tmp)
        node = await asyncio.to_thread(ensure_local_node, base)
        say(f"started a throwaway node on {node.address}", node=node.address)
        engines: dict[str, Engine] = {}
        try:
            for name in ("alice", "bob", "carol"):
                cfg = EngineConfig(
                    profile_dir=base / "profiles" / name,
                    server=node.address,
                    kdf=FAST_TEST_PARAMS,
                    data_dir=base,
                )
                e = await Engine.open(cfg, _PASS, create=True)
                engines[name] = e
                # Pin the node key we just started, then register.
                files.write_private(
                    cfg.profile_dir / "pins.json",
                    f'{{"{node.address}": "{node.fingerprint}"}}'.encode(),
                )
                who = await e.register(name, f"{name} password")
                say(f"{name}: registered, device {who.device_fingerprint}", user=name)
            alice, bob, carol = engines["alice"], engines["bob"], engines["carol"]
            chan = await alice.create_group("demo")
            say(f"alice: created group 'demo' ({chan.id[:16]}...)", channel=chan.id)
            chan = await alice.invite(chan.id, ["bob", "carol"])
            say(f"alice: invited bob and carol -> members {', '.join(chan.members)}")
            for e, name in ((bob, "bob"), (carol, "carol")):
                await e.sync()
                say(f"{name}: joined from the Welcome: {[c.name for c in await e.channels()]}")
            for e, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
                await e.send(chan.id, f"hello from {name}")
                say(f"{name}: sent 'hello from {name}'")
            for e, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
                got = await e.sync()
                texts = [f"{m.sender}: {m.text}" for m in got]
                say(f"{name}: received {texts}", user=name, received=texts)
            chan = await alice.remove(chan.id, ["carol"])
            say(f"alice: removed carol -> members {', '.join(chan.members)} (epoch {chan.epoch})")
            await bob.sync()
            await alice.send(chan.id, "carol cannot read this")
            say("alice: sent 'carol cannot read this'")
            got = await bob.sync()
            say(f"bob: received {[m.text for m in got]}")
            got = await carol.sync()
            info = (await carol.channels())[0]
            state = "still a member" if info.active else "no longer a member"
            say(
                f"carol: received {[m.text for m in got]}; channel state: {state}",
                carol_received=[m.text for m in got],
                carol_active=info.active,
            )
            try:
                await carol.send(chan.id, "am I still here?")
            except QpcError as exc:
                say(f"carol: cannot send any more: {exc}")
            say("done: the removed member holds no keys for the new epoch")
        finally:
            for e in engines.values():
                await e.close()
            await asyncio.to_thread(stop_local_node, base)
    if opts.json:
        emit(opts, "", {"steps": steps})
