"""The TUI's link screen through the real engine and a real node: F9 on alice's
device, `link_join` on her new laptop, the screen names the channel it added."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from node.embedded import EmbeddedNode
from tests.e2e.helpers import PASSPHRASE, PASSWORD, engine_config, group_of
from tests.tui.fake_engine import FakeFactory
from tui.app import make_app
from tui.client.engine import Engine
from tui.screens.devices import LinkScreen
from tui.settings import TuiSettings

pytestmark = [pytest.mark.network]


async def test_link_screen_links_a_real_device(
    node: EmbeddedNode, tmp_path: Path, engines: list[Engine]
) -> None:
    members, chan = await group_of(node, tmp_path, ["alice", "bob", "carol"])
    alice, bob, carol = members
    engines += [bob, carol]  # the app closes alice's engine when it exits
    assert (await bob.check_key("alice", verify=True)).devices[0].status == "verified"
    laptop = await Engine.open(engine_config(node, tmp_path / "laptop"), PASSPHRASE, create=True)
    engines.append(laptop)
    await laptop.login("alice", PASSWORD)

    factory: Any = FakeFactory(alice)  # type: ignore[arg-type]  # hands out the real engine
    app = make_app(factory, TuiSettings(ping_interval_s=0))
    async with app.run_test(size=(100, 30)) as pilot:
        for _ in range(200):
            if app.main is not None and app.main.rows:
                break
            await pilot.pause()
        await pilot.press("f9")
        screen = app.screen
        assert isinstance(screen, LinkScreen)

        def text(widget: str) -> str:
            return str(screen.query_one(widget, Static).render())

        for _ in range(200):
            if "-" in text("#link-code"):
                break
            await pilot.pause()
        code = text("#link-code").strip()
        joined = await laptop.link_join(code, 30)
        assert joined.device == alice.device_id.hex()
        # The app's own event subscription feeds the link worker; wait for it to end.
        link = [w for w in app.workers if w.group == "link"]
        await asyncio.wait_for(app.workers.wait_for_complete(link), 30)
        await pilot.pause()
        assert screen.linked, text("#link-error")
        assert "added it to 1 channel(s): #team" in text("#link-status")
        await pilot.press("escape")

    await laptop.sync()
    assert [c.id for c in await laptop.channels()] == [chan]
    await bob.sync()
    lap = laptop.device_id.hex()
    check = {d.device: d for d in (await bob.check_key("alice")).devices}
    assert check[lap].status == "verified" and check[lap].linked_by == alice.device_id.hex()
