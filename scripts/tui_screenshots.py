"""Write SVG screenshots of the TUI's main screens to docs/screenshots/.

Run from the repository root: ``python3 scripts/tui_screenshots.py``. Uses the
in-memory engine of the tests, so the pictures are the same on every run.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["TZ"] = "UTC"
time.tzset()

from tests.tui.conftest import populated_engine, settle  # noqa: E402
from tests.tui.fake_engine import FakeEngine, FakeFactory  # noqa: E402
from tui.app import make_app  # noqa: E402
from tui.client.api import PingResult  # noqa: E402
from tui.messages import PingSampled  # noqa: E402
from tui.settings import TuiSettings  # noqa: E402

OUT = ROOT / "docs" / "screenshots"


async def shoot(
    name: str,
    keys: Sequence[str] = (),
    *,
    size: tuple[int, int] = (100, 30),
    engine: FakeEngine | None = None,
    resume: bool = True,
    pings: int = 0,
    arrive: Sequence[tuple[str, str, str]] = (),
) -> None:
    engine = engine or populated_engine()[0]
    app = make_app(FakeFactory(engine, resume=resume), TuiSettings(ping_interval_s=0))
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        for i in range(pings):
            rtt = 0.42 + 0.05 * ((i * 7) % 11) + (0.6 if i % 13 == 5 else 0.0)
            app.post_message(PingSampled(PingResult(rtts_ms=(rtt,))))
        await settle(app, pilot)
        for channel_name, sender, text in arrive:  # live messages (channel by name)
            channel = next(c for c in await engine.channels() if c.name == channel_name)
            await engine.deliver(channel.id, sender, text)
        await settle(app, pilot)
        for key in keys:
            await pilot.press(key)
            await settle(app, pilot)
        path = app.save_screenshot(filename=f"{name}.svg", path=str(OUT))
        print(path)


async def shoot_link(name: str, *, finish: bool) -> None:
    """The link screen (F9): waiting with the code, or finished with the channels."""
    engine = populated_engine()[0]
    app = make_app(FakeFactory(engine), TuiSettings(ping_interval_s=0))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("f9")
        await engine.link_waiting.wait()
        if finish and engine.link_arrival is not None:
            engine.link_arrival.set_result("e7" * 32)
            await settle(app, pilot)
        for _ in range(5):
            await pilot.pause()
        path = app.save_screenshot(filename=f"{name}.svg", path=str(OUT))
        print(path)
        await pilot.press("escape")


def backlog_engine() -> FakeEngine:
    """#general with 40 messages read earlier and 12 new ones."""
    engine, general, _random = populated_engine()
    for i in range(40):
        engine.add_message(general.id, ("bob", "carol")[i % 2], f"earlier message {i}")
    engine.clear_unread(general.id)
    for i in range(12):
        engine.add_message(general.id, ("bob", "carol", "dave")[i % 3], f"new message {i}")
    return engine


def failing_invite_engine() -> FakeEngine:
    """An engine whose next invite fails: the dialog comes back filled in."""
    from proto.errors import NotFound

    engine = populated_engine()[0]
    engine.fail["invite"] = NotFound("no such user: dvae")
    return engine


async def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    await shoot("main-80x24", size=(80, 24))
    await shoot("main-120x40", ["f5"], size=(120, 40))
    await shoot("welcome", resume=False, size=(80, 24))
    await shoot("help", ["f1"], size=(100, 30))
    await shoot("whoami", ["f2"])
    await shoot("ping", ["f4"], pings=40)
    await shoot("new-group", ["ctrl+n", *"weekend-trip"])
    await shoot("verify-keys", ["f6", *"bob", "enter"])
    await shoot("palette", ["ctrl+p", *"channel"])
    await shoot("empty", engine=FakeEngine(), size=(80, 24))
    await shoot("backlog", engine=backlog_engine(), size=(80, 24))
    await shoot("invite-failed", ["ctrl+t", *"dvae", "enter"], engine=failing_invite_engine())
    mentions = [
        ("general", "bob", "@alice can you restart the node after lunch?"),
        ("random", "carol", "alice: the photos are up"),
        ("random", "bob", "see https://example.org/photos"),
        ("bob", "bob", "ping"),
    ]
    await shoot("mentions", arrive=mentions, size=(100, 30))
    await shoot("search", ["ctrl+f", *"node"], size=(100, 30))
    await shoot("slash-complete", [*"/in", "tab"], size=(100, 30))
    await shoot("links", ["alt+a", "ctrl+l"], arrive=mentions, size=(100, 30))
    await shoot_link("link-waiting", finish=False)
    await shoot_link("link-done", finish=True)
    await shoot("devices", ["f7"], size=(100, 30))
    await shoot("devices-unlink", ["f7", "down", "u"], size=(100, 30))


if __name__ == "__main__":
    asyncio.run(main())
