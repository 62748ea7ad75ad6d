"""Every decoder of outside bytes, as a fuzz target with valid samples to mutate.

Targets are built lazily (some need keys or an MLS group on disk) and the
runner forks after building, so each worker inherits the state.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from node import config as node_config_module
from proto import codec as c
from proto import mls
from proto.crypto import atrest, envelope
from proto.crypto.identity import IdentityKey
from proto.errors import (
    ConfigError,
    CryptoError,
    LocalError,
    MlsError,
    ProtocolError,
    QpcError,
)
from tests.fuzz.engine import Target
from tests.proto import samples
from tui import settings
from tui.client import appdata


def wire_requests() -> Target:
    data = [c.encode_request(samples.request_for(name)) for name in samples.PARAMS]
    data.append(c.encode_request(c.Request(auth=b"", call=samples.PARAMS["health"])))
    return Target(
        name="wire-request",
        samples=data,
        decode=c.decode_request,
        typed_errors=(ProtocolError,),
        capnp=True,
    )


def wire_responses() -> Target:
    data = [c.encode_response(c.Response(result=r)) for r in samples.RESULTS.values()]
    data.append(c.encode_response(c.Response(result=samples.ERROR)))
    return Target(
        name="wire-response",
        samples=data,
        decode=c.decode_response,
        typed_errors=(ProtocolError,),
        capnp=True,
    )


def sealed_envelopes() -> Target:
    """The hybrid (X-Wing) sealed-sender envelope, opened by the recipient."""
    key = envelope.HybridPrivateKey.generate()
    sender = IdentityKey.generate()
    rid, cid = b"r" * 32, b"channel"
    data = [
        envelope.seal(
            body=body,
            recipient_key=key.public_key,
            recipient_id=rid,
            channel_id=cid,
            content_type=ct,
            sender=sender,
        ).data
        for body, ct in (
            (b"hello", envelope.ContentType.MLS_APPLICATION),
            (b"", envelope.ContentType.MLS_WELCOME),
        )
    ]

    def decode(raw: bytes) -> object:
        return envelope.open_envelope(raw, recipient_key=key, recipient_id=rid, channel_id=cid)

    return Target(name="sealed-envelope", samples=data, decode=decode, typed_errors=(CryptoError,))


def hybrid_keys() -> Target:
    data = [envelope.HybridPrivateKey.generate().public_key.to_bytes()]
    return Target(
        name="hybrid-key",
        samples=data,
        decode=envelope.HybridPublicKey.from_bytes,
        typed_errors=(QpcError,),
    )


def app_data() -> Target:
    mid = bytes(range(16))
    items: list[appdata.Known] = [
        appdata.ChatText(text="hi there", ts=1_700_000_000_000, nonce=mid, reply_to=mid),
        appdata.Meta(name="team", kind="group", access_keys={"ab" * 32: "cd" * 32}),
        appdata.Hello(access_key=bytes(32)),
        appdata.Reaction(target=mid, emoji="👍"),
        appdata.Edit(target=mid, text="new", ts=5),
        appdata.Delete(target=mid),
        appdata.Receipt(up_to=mid),
        appdata.Typing(),
        appdata.Topic(text="plans"),
    ]
    data = [appdata.encode(i) for i in items]
    data.append(b'{"t":"msg","text":"hi","ts":1}')  # the legacy JSON reader
    return Target(
        name="app-data",
        samples=data,
        decode=appdata.decode,
        typed_errors=(MlsError,),
        capnp=True,
    )


def at_rest_records() -> Target:
    cipher = atrest.RecordCipher(bytes(range(32)))
    data = [
        cipher.encrypt(text, table="messages", column="body", row=7)
        for text in (b"stored text", b"")
    ]

    def decode(raw: bytes) -> object:
        return cipher.decrypt(raw, table="messages", column="body", row=7)

    return Target(name="at-rest", samples=data, decode=decode, typed_errors=(CryptoError,))


def profile_metadata() -> Target:
    """The KDF parameters read from a profile's metadata file (JSON)."""
    data = [json.dumps(atrest.DEFAULT_PARAMS.to_dict()).encode()]

    def decode(raw: bytes) -> object:
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise LocalError("not JSON") from None
        return atrest.KdfParams.from_dict(doc)

    return Target(name="profile-kdf", samples=data, decode=decode, typed_errors=(LocalError,))


def _file_reader(name: str, sample: str, read: Callable[[Path], object]) -> Target:
    """A config file reader: each input is written to a file and read back."""
    path = Path(tempfile.mkdtemp(prefix="qpc-fuzz-")) / "config.toml"

    def decode(raw: bytes) -> object:
        path.write_bytes(raw)
        return read(path)

    return Target(name=name, samples=[sample.encode()], decode=decode, typed_errors=(ConfigError,))


NODE_CONFIG = """\
[node]
listen = "127.0.0.1:7000"
data_dir = "/tmp/qpc-node"
retention = 86400
max_payload_bytes = 262144
max_fanout = 1000
session_ttl = 604800
"""

TUI_SETTINGS = """\
[tui]
bell = true
notify_messages = false
theme = "textual-ansi"
ping_interval_s = 5
log_file = "~/qpc-tui.log"

[tui.keys]
"main.new_group" = "ctrl+g"
"composer.newline" = "ctrl+j"
"""


def node_config() -> Target:
    """The node's TOML config file (``qpc-node --config``)."""
    return _file_reader("node-config", NODE_CONFIG, node_config_module.load_toml)


def tui_settings() -> Target:
    """The client's TOML settings file (``[tui]`` table)."""
    return _file_reader("tui-settings", TUI_SETTINGS, settings.load_settings)


def _mls_parties() -> tuple[mls.Client, mls.Group, list[bytes]]:
    """A two-member group and every kind of MLS message one member receives."""
    suite = mls.CIPHERSUITE_CLASSICAL
    tmp = Path(tempfile.mkdtemp(prefix="qpc-fuzz-"))
    alice = mls.Client.create(str(tmp / "a.db"), b"a" * 32, b"alice", ciphersuite=suite)
    bob = mls.Client.create(str(tmp / "b.db"), b"b" * 32, b"bob", ciphersuite=suite)
    carol = mls.Client.create(str(tmp / "c.db"), b"c" * 32, b"carol", ciphersuite=suite)
    group = alice.create_group(b"fuzz-group")
    out = group.add_members([bob.key_package()])
    group.merge_pending_commit()
    assert out.welcome is not None
    bob_group = bob.join_from_welcome(out.welcome, out.ratchet_tree)
    app = group.encrypt(b"hello bob")
    add = group.add_members([carol.key_package()])  # pending: bob sees a commit of epoch 1
    group.clear_pending_commit()
    info = group.export_group_info()
    msgs = [app, add.commit, out.welcome, info, bob.key_package()]
    return bob, bob_group, msgs


def mls_messages() -> Target:
    """MLS messages, Welcomes, GroupInfos and KeyPackages handed to the binding."""
    bob, group, msgs = _mls_parties()
    calls: list[Callable[[bytes], object]] = [
        group.process,
        mls.message_info,
        mls.parse_key_package,
        bob.join_from_welcome,
        bob.join_by_external_commit,  # GroupInfo
    ]

    def decode(raw: bytes) -> object:
        return calls[len(raw) % len(calls)](raw)

    return Target(name="mls", samples=msgs, decode=decode, typed_errors=(MlsError,))


ALL: dict[str, Callable[[], Target]] = {
    "wire-request": wire_requests,
    "wire-response": wire_responses,
    "sealed-envelope": sealed_envelopes,
    "hybrid-key": hybrid_keys,
    "app-data": app_data,
    "at-rest": at_rest_records,
    "profile-kdf": profile_metadata,
    "node-config": node_config,
    "tui-settings": tui_settings,
    "mls": mls_messages,
}
"""Name -> target factory."""
