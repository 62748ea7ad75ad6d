"""The one place that chooses the asyncio event loop: stdlib asyncio or uvloop.

A program's config names the loop (``loop = "asyncio"`` or ``"uvloop"``,
``--loop`` on the command line) and runs its main coroutine with :func:`run`.
uvloop is an optional extra (``pip install quicnprotochat[fast]``); asking for
it when it is not installed is a :class:`~proto.errors.ConfigError`. The
measured comparison and the default are in docs/perf/node.md ("Transport
stack").
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from proto.errors import ConfigError

LOOPS = ("asyncio", "uvloop")
DEFAULT_LOOP = "asyncio"

T = TypeVar("T")


def check_loop(name: str) -> str:
    """Validate a loop name (config parsing); return it.

    Raises:
        ConfigError: unknown name, or uvloop asked for and not installed.
    """
    if name not in LOOPS:
        raise ConfigError(f"unknown event loop {name!r} (expected {' or '.join(LOOPS)})")
    if name == "uvloop":
        try:
            importlib.import_module("uvloop")
        except ImportError:
            raise ConfigError("loop 'uvloop' needs the uvloop package (extra 'fast')") from None
    return name


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory :class:`asyncio.Runner` takes for loop ``name`` (None: the default)."""
    if check_loop(name) == "uvloop":
        factory: Callable[[], asyncio.AbstractEventLoop] = importlib.import_module(
            "uvloop"
        ).new_event_loop
        return factory
    return None


def run(main: Coroutine[Any, Any, T], loop: str = DEFAULT_LOOP) -> T:
    """``asyncio.run(main)`` on the event loop named ``loop``."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(main)
