"""Application-data records (proto/schemas/appdata.capnp): round trips, limits,
a kind from the future, and ids."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import capnp
import pytest

from proto import appdata
from proto.errors import MalformedInput

ID = bytes(range(16))


def _all() -> list[appdata.Known]:
    return [
        appdata.ChatText(text="héllo", ts=5, nonce=ID, reply_to=ID[::-1], action=True),
        appdata.ChatText(text="plain", ts=6, nonce=ID),
        appdata.Meta(name="team", kind="dm", access_keys={"ab" * 32: "cd" * 32}),
        appdata.Hello(access_key=bytes(32)),
        appdata.Reaction(target=ID, emoji="👍🏽", remove=True),
        appdata.Edit(target=ID, text="new", ts=9),
        appdata.Delete(target=ID),
        appdata.Receipt(up_to=ID),
        appdata.Typing(),
        appdata.Topic(text="Friday plans"),
        appdata.DeviceCert(
            device=bytes(range(32)), issued_ms=1_700_000_000_000, signature=b"s" * 64
        ),
    ]


@pytest.mark.parametrize("item", _all(), ids=lambda i: type(i).__name__)
def test_every_kind_round_trips(item: appdata.Known) -> None:
    data = appdata.encode(item)
    assert data[:4] == b"\0\0\0\0"  # Cap'n Proto, one segment
    assert appdata.decode(data) == item


@functools.cache
def _future_schema() -> object:
    """Our schema plus a union member a newer version might add (a poll).

    Loaded once per process: pycapnp aborts on a second file with the same id.
    """
    tmp_path = Path(tempfile.mkdtemp(prefix="qpc-appdata-"))
    text = appdata.SCHEMA_PATH.read_text()
    text = text.replace("@0xac59253604b9a388;", "@0xd1f2e3a4b5c6d7e9;")  # pycapnp: unique ids
    text = text.replace(
        "    deviceCert @10 :DeviceCert;\n",
        "    deviceCert @10 :DeviceCert;\n    poll @11 :Poll;\n",
    )
    text += "\nstruct Poll {\n  question @0 :Text;\n  options @1 :List(Text);\n}\n"
    path = tmp_path / "future.capnp"
    path.write_text(text)
    return capnp.load(str(path))


def future_record() -> bytes:
    """A record of a kind this version does not know (a poll, union member 11)."""
    future: object = _future_schema()
    rec = future.AppRecord.new_message(version=7)  # type: ignore[attr-defined]
    poll = rec.body.init("poll")
    poll.question = "lunch?"
    poll.init("options", 2)
    return bytes(rec.to_bytes())


def test_a_kind_from_the_future_decodes_to_unknown() -> None:
    assert appdata.decode(future_record()) == appdata.Unknown(kind="future")
    future: object = _future_schema()
    # and a newer writer's known kinds still read (fields are only added)
    rec = future.AppRecord.new_message(version=7)  # type: ignore[attr-defined]
    rec.body.init("topic").text = "still readable"
    assert appdata.decode(bytes(rec.to_bytes())) == appdata.Topic(text="still readable")


def test_legacy_json_records_still_decode() -> None:
    assert appdata.decode(b'{"t":"msg","text":"hi","ts":3}') == appdata.ChatText(text="hi", ts=3)
    assert appdata.decode(b'{"t":"x"}') == appdata.Unknown(kind="x")


@pytest.mark.parametrize(
    "item",
    [
        appdata.ChatText(text="x" * (appdata.MAX_TEXT_CHARS + 1), ts=1, nonce=ID),
        appdata.ChatText(text="x", ts=1, nonce=b"short"),
        appdata.ChatText(text="x", ts=1, nonce=ID, reply_to=b"\1"),
        appdata.Reaction(target=ID, emoji=""),
        appdata.Reaction(target=ID, emoji="x" * 17),
        appdata.Edit(target=b"", text="x", ts=1),
        appdata.Delete(target=ID + b"\0"),
        appdata.Receipt(up_to=b""),
        appdata.Topic(text="t" * (appdata.MAX_TOPIC_CHARS + 1)),
        appdata.Meta(name="team", kind="other"),
        appdata.Hello(access_key=b"\1" * 31),
        appdata.DeviceCert(device=b"\1" * 31, issued_ms=1, signature=b"s" * 64),
        appdata.DeviceCert(device=b"\1" * 32, issued_ms=1, signature=b"s" * 63),
    ],
    ids=lambda i: type(i).__name__,
)
def test_out_of_bounds_records_are_typed_errors(item: appdata.Known) -> None:
    with pytest.raises(MalformedInput):
        appdata.decode(appdata.encode(item))


@pytest.mark.parametrize("data", [b"", b"\0" * 7, b"\0\0\0\0\1\0\0\0" + b"\xff" * 8, b"[1]"])
def test_garbage_is_a_typed_error(data: bytes) -> None:
    with pytest.raises(MalformedInput):
        appdata.decode(data)


def test_message_ids_bind_the_author() -> None:
    a, b = b"\1" * 32, b"\2" * 32
    assert appdata.message_id(a, ID) == appdata.message_id(a, ID)
    assert appdata.message_id(a, ID) != appdata.message_id(b, ID)
    assert len(appdata.message_id(a, appdata.new_nonce())) == appdata.ID_BYTES
