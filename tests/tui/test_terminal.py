"""Degrading for the terminal: colours and glyphs from TERM/COLORTERM/locale."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.tui.fake_engine import FakeFactory
from tui.app import QpcApp
from tui.terminal import TerminalCaps, terminal_caps

_BLOCKS = "▔▁▏▕"


@pytest.mark.parametrize(
    ("env", "colors", "blocks"),
    [
        ({"TERM": "xterm-256color", "LANG": "C.UTF-8"}, 256, True),
        ({"TERM": "screen", "LANG": "en_US.UTF-8"}, 16, True),
        ({"TERM": "tmux-256color", "LC_ALL": "C.UTF-8"}, 256, True),
        ({"TERM": "xterm", "COLORTERM": "truecolor", "LANG": "C.UTF-8"}, 16_777_216, True),
        ({"TERM": "linux", "LANG": "C.UTF-8"}, 16, False),
        ({"TERM": "vt100", "LANG": "C.UTF-8"}, 16, False),
        ({"TERM": "xterm-256color", "LANG": "C"}, 256, False),
    ],
)
def test_caps_from_environment(env: dict[str, str], colors: int, blocks: bool) -> None:
    off = env["TERM"] != "vt100"  # VT100 turns attributes off only by SGR 0
    assert terminal_caps(env) == TerminalCaps(
        colors=colors, unicode_blocks=blocks, sgr_attribute_off=off
    )


async def _welcome_text(app: QpcApp) -> str:
    async with app.run_test(size=(80, 40)) as pilot:
        await pilot.pause()
        await pilot.pause()
        return app.export_screenshot()


async def test_basic_terminal_draws_no_block_glyphs_and_uses_ansi_theme(
    app_factory: Callable[..., QpcApp],
) -> None:
    full = app_factory(FakeFactory(resume=False))
    svg = await _welcome_text(full)
    assert any(ch in svg for ch in _BLOCKS)  # the default look uses them
    assert full.theme != "ansi-dark"

    basic = app_factory(FakeFactory(resume=False))
    basic.terminal = TerminalCaps(colors=16, unicode_blocks=False)
    svg = await _welcome_text(basic)
    assert not any(ch in svg for ch in _BLOCKS)
    assert "Register" in svg
    assert basic.theme == "ansi-dark" and basic.ansi_color


async def test_hosted_welcome_says_the_host_sees_messages(
    app_factory: Callable[..., QpcApp],
) -> None:
    app = app_factory(FakeFactory(resume=False))
    app.hosted = True
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        intro = str(app.screen.query_one("#welcome-intro").render())
    assert "host sees your messages" in intro
    assert "never leave this machine" not in intro
