"""Numbered SQL migrations per store backend, shipped as package data.

Files are named ``NNN_description.sql`` and live in one sub-directory per
backend (``sqlite/``, ``postgres/``). They are applied in order and never
edited once landed; a new change is a new file.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import re

_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    """One migration script."""

    version: int
    """Its number, from the file name (``001`` -> 1)."""
    name: str
    """The file name, e.g. ``001_initial.sql``."""
    sql: str
    """The SQL text."""


def load(backend: str) -> list[Migration]:
    """Return the migrations for ``backend`` (e.g. ``"sqlite"``) sorted by version.

    Raises:
        ValueError: if two files share a number or the numbers have a gap.
    """
    root = importlib.resources.files(__name__).joinpath(backend)
    found: list[Migration] = []
    for entry in root.iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        found.append(
            Migration(version=int(match.group(1)), name=entry.name, sql=entry.read_text("utf-8"))
        )
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise ValueError(
                f"{backend} migrations: expected version {expected}, got {migration.name}"
            )
    return found
