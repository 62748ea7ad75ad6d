"""Bindings have ids and can be remapped; help lists them; the palette covers every action."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.binding import Binding
from textual.widgets import DataTable

import tui.screens
import tui.widgets
from proto.errors import ConfigError
from tests.tui.conftest import current, settle
from tests.tui.fake_engine import FakeEngine, FakeFactory
from tui.app import QpcApp
from tui.commands import COMMANDS
from tui.screens.dialogs import NewGroupDialog
from tui.screens.help import HelpScreen
from tui.screens.info import InfoScreen
from tui.screens.main import MainScreen
from tui.settings import TuiSettings, load_settings

AppFactory = Callable[..., QpcApp]


def _our_classes() -> list[type]:
    classes: list[type] = [QpcApp]
    for package in (tui.screens, tui.widgets):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            classes += [
                obj
                for _, obj in inspect.getmembers(module, inspect.isclass)
                if obj.__module__ == module.__name__
            ]
    return classes


def test_every_binding_has_a_unique_id() -> None:
    seen: dict[str, str] = {}
    for cls in _our_classes():
        for binding in cls.__dict__.get("BINDINGS", []):
            assert isinstance(binding, Binding), cls
            assert binding.id, f"{cls.__name__}: {binding.key} has no id"
            assert re.fullmatch(r"[a-z]+\.[a-z_]+", binding.id), binding.id
            assert binding.id not in seen, f"{binding.id} in {cls.__name__} and {seen[binding.id]}"
            seen[binding.id] = cls.__name__
    assert len(seen) > 20


def test_palette_titles_are_noun_verb_and_actions_exist() -> None:
    titles = [c.title for c in COMMANDS]
    assert len(titles) == len(set(titles))
    for command in COMMANDS:
        assert re.fullmatch(r"[a-z]+: [a-z]+", command.title), command.title
        name = command.action.split("(")[0]
        assert callable(getattr(QpcApp, f"action_{name}", None)), command.action
    for needed in ("channel: new", "channel: invite", "dm: start", "keys: verify"):
        assert needed in titles


async def test_keymap_from_settings_remaps(engine: FakeEngine, app_factory: AppFactory) -> None:
    app = app_factory(FakeFactory(engine), keymap={"main.new_group": "ctrl+g"})
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+n")
        assert isinstance(app.screen, MainScreen)  # old key does nothing now
        await pilot.press("ctrl+g")
        assert isinstance(app.screen, NewGroupDialog)


async def test_help_lists_ids_with_remapped_keys(
    engine: FakeEngine, app_factory: AppFactory
) -> None:
    app = app_factory(FakeFactory(engine), keymap={"main.new_group": "ctrl+g"})
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        table = app.screen.query_one("#help-keys", DataTable)
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        by_id = {row[3]: row for row in rows}
        assert by_id["main.new_group"][1] == "ctrl+g"
        assert by_id["app.quit"][1] == "ctrl+q"
        assert "composer.send" in by_id
        await pilot.press("escape")
        assert isinstance(current(app), MainScreen)


async def test_function_keys_open_panes(engine: FakeEngine, app_factory: AppFactory) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("f2")
        await settle(app, pilot)
        assert isinstance(app.screen, InfoScreen)
        from textual.widgets import TabbedContent

        from tui.widgets.panes import HealthPane, WhoAmIPane

        tabs = app.screen.query_one(TabbedContent)
        assert tabs.active == "whoami"
        assert app.screen.query_one(WhoAmIPane).whoami is not None
        await pilot.press("f3")
        assert tabs.active == "health"
        health = app.screen.query_one(HealthPane).health
        assert health is not None and health.status == "ok"
        await pilot.press("f4")
        assert tabs.active == "ping"
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_ping_samples_reach_the_pane(engine: FakeEngine, app_factory: AppFactory) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        for _ in range(3):
            app.ping()
            await settle(app, pilot)
        await pilot.press("f4")
        await settle(app, pilot)
        from tui.widgets.panes import PingPane

        pane = app.screen.query_one(PingPane)
        assert pane.samples == [0.5, 0.5, 0.5]
        stats = str(pane.query_one("#ping-stats").render())
        assert "min 0.50 ms" in stats and "median 0.50 ms" in stats and "max 0.50 ms" in stats


async def test_palette_runs_commands(engine: FakeEngine, app_factory: AppFactory) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+p", *"channel: new")
        await settle(app, pilot)  # the palette searches in a worker of its own
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, NewGroupDialog)


def test_settings_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[tui]\nbell = true\nping_interval_s = 2\n[tui.keys]\n"main.new_group" = "ctrl+g"\n'
    )
    settings = load_settings(path)
    assert settings == TuiSettings(
        keymap={"main.new_group": "ctrl+g"}, bell=True, ping_interval_s=2
    )
    assert load_settings(tmp_path / "missing.toml") == TuiSettings()
    path.write_text("[tui]\nbell = 'loud'\n")
    with pytest.raises(ConfigError):
        load_settings(path)
    path.write_text("[tui.keys]\n'main.new_group' = 3\n")
    with pytest.raises(ConfigError):
        load_settings(path)
    for bad in ('log_file = "~qpc-no-such-user/x.log"', "ping_interval_s = nan"):
        path.write_text(f"[tui]\n{bad}\n")
        with pytest.raises(ConfigError):
            load_settings(path)
    path.write_bytes(b"[tui]\ntheme = '\xff'\n")
    with pytest.raises(ConfigError):
        load_settings(path)


async def test_bell_toggle_command(engine: FakeEngine, app_factory: AppFactory) -> None:
    app = app_factory(FakeFactory(engine))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert not app.settings.bell
        await app.run_action("toggle_bell")
        assert app.settings.bell


async def test_the_documented_config_example_loads_and_its_theme_exists(
    tmp_path: Path, app_factory: Callable[..., QpcApp]
) -> None:
    from tui.settings import load_settings

    doc = (Path(__file__).parents[2] / "docs" / "TUI.md").read_text()
    example = re.search(r"```toml\n(.*?)```", doc, re.S)
    assert example is not None
    (tmp_path / "config.toml").write_text(example.group(1))
    settings = load_settings(tmp_path / "config.toml")
    assert settings.theme
    app = app_factory(FakeFactory(FakeEngine()), theme=settings.theme)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.theme == settings.theme


async def test_an_unknown_theme_is_a_warning_not_a_crash(
    app_factory: Callable[..., QpcApp],
) -> None:
    from tests.tui.conftest import Recorder

    recorder = Recorder()
    app = app_factory(FakeFactory(FakeEngine()), theme="textual-ansi")
    async with app.run_test(size=(80, 24), message_hook=recorder) as pilot:
        await pilot.pause()
        assert any("Unknown theme 'textual-ansi'" in t for _, t in recorder.notifications())
        assert app.theme != "textual-ansi"


async def test_health_and_ping_panes_work_before_login(app_factory: AppFactory) -> None:
    """F3/F4 on the welcome screen ask the server typed in the form, no account."""
    from textual.widgets import Input, TabbedContent

    from tui.screens.welcome import WelcomeScreen
    from tui.widgets.panes import HealthPane, PingPane

    factory = FakeFactory(resume=False)
    app = app_factory(factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert isinstance(current(app), WelcomeScreen)
        app.screen.query_one("#server", Input).value = "node.example:7000"
        await pilot.press("f3")
        await settle(app, pilot)
        assert isinstance(current(app), InfoScreen)
        assert app.screen.query_one(TabbedContent).active == "health"
        health = app.screen.query_one(HealthPane).health
        assert health is not None and health.server == "node.example:7000"
        assert set(app.screen.query_one(PingPane).samples) == {1.5}
        assert factory.bare_calls == [
            ("health", "node.example:7000"),
            ("ping", "node.example:7000"),
        ]
        await pilot.press("escape")
        assert isinstance(current(app), WelcomeScreen)
