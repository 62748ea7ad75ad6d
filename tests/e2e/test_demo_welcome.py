"""``qpc demo`` falls back to a real welcome-screen login on its own node."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui.client.localnode import read_local_node
from tui.demo import DemoFactory
from tui.session import LoginForm

pytestmark = pytest.mark.slow


async def test_demo_welcome_login_uses_the_demo_node(tmp_path: Path) -> None:
    factory = DemoFactory(tmp_path)
    try:
        key = await factory.probe("")
        node = read_local_node(tmp_path)
        assert node is not None and key.fingerprint == node.fingerprint
        form = LoginForm(
            server="", user="dana", password="dana password", passphrase="pp", register=True
        )
        engine = await factory.open(form, trust_fingerprint=key.fingerprint)
        try:
            await engine.register("dana", "dana password")
            assert (await engine.whoami()).user == "dana"
        finally:
            await engine.close()
    finally:
        await factory.close()
