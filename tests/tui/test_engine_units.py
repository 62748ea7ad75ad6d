"""Engine pieces without a node: app data, state document, API helpers, CLI parsing."""

from __future__ import annotations

import pytest

from proto.errors import MalformedInput, ProfileError
from tui.cli.main import build_parser
from tui.client import api, appdata
from tui.client.engine import Engine
from tui.client.state import ChannelRecord, DeviceRecord, EngineState, HeldEnvelope, OutboxEntry


def test_appdata_round_trip_and_rejects_garbage() -> None:
    items: list[appdata.ChatText | appdata.Meta | appdata.Hello] = [
        appdata.ChatText(text="héllo", ts=5),
        appdata.Meta(name="team", kind="group", access_keys={"ab": "00" * 32}),
        appdata.Hello(access_key=bytes(range(32))),
    ]
    for item in items:
        assert appdata.decode(appdata.encode(item)) == item
    assert appdata.decode(b'{"t":"future-thing"}') == appdata.Unknown(kind="future-thing")
    for bad in (
        b"",
        b"[]",
        b'{"t":"msg"}',
        b'{"t":"msg","text":1,"ts":1}',
        b'{"t":"meta","name":"x","kind":"other"}',
        b'{"t":"hello","ak":"zz"}',
        b'{"t":"msg","text":"' + b"x" * 20000 + b'","ts":1}',
    ):
        with pytest.raises(MalformedInput):
            appdata.decode(bad)


def test_state_document_round_trip() -> None:
    st = EngineState(user="alice", cursor=7, token="ab")
    st.channels["00ff"] = ChannelRecord(name="team", unread=2)
    st.devices["aa"] = DeviceRecord(user="bob", hybrid="01", access_key="02")
    st.held.append(HeldEnvelope(seq=3, channel="00ff", content_type=1, sender="aa", body="AAE="))
    st.outbox.append(OutboxEntry(id=4, channel="00ff", text="hi", ts=1, devices=["aa"]))
    again = EngineState.from_json(st.to_json())
    assert again == st
    assert again.held[0].body_bytes() == b"\x00\x01"
    with pytest.raises(ProfileError):
        EngineState.from_json(b'{"v": 99}')
    with pytest.raises(ProfileError):
        EngineState.from_json(b"not json")


def test_api_helpers() -> None:
    p = api.PingResult(rtts_ms=(3.0, 1.0, 2.0, 10.0))
    assert (p.min_ms, p.median_ms, p.max_ms) == (1.0, 2.5, 10.0)
    assert api.PingResult(rtts_ms=()).median_ms == 0.0
    off = api.ConnectionState.offline(3)
    assert off.status is api.ConnectionStatus.OFFLINE and off.outbox_count == 3
    assert api.ConnectionState.reconnecting(1.5).retry_in_s == 1.5
    check = api.KeyCheck(
        user="bob",
        devices=(api.DeviceKeyCheck(device="aa", safety_number="1", status="changed"),),
    )
    assert check.changed
    msg = api.Message(id=1, channel="c", sender="a", text="t", time_ms=1500)
    assert msg.time == 1.5 and msg.state is api.DeliveryState.RECEIVED


def test_global_options_before_or_after_the_subcommand() -> None:
    parser = build_parser()
    a = parser.parse_args(["--server", "h:1", "--json", "send", "c", "t"])
    b = parser.parse_args(["send", "c", "t", "--server", "h:1", "--json"])
    assert (a.server, a.json, a.command) == (b.server, b.json, b.command) == ("h:1", True, "send")
    assert parser.parse_args(["whoami"]).server is None


def _engine_implements_the_protocol(engine: Engine) -> api.ClientEngine:
    """Checked by mypy: the real engine satisfies the TUI's ClientEngine protocol."""
    return engine


def test_engine_is_a_client_engine() -> None:
    assert issubclass(Engine, api.ClientEngine)
