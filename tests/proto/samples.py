"""One representative request and result per method, shared by the codec and RPC tests.

The golden vectors in ``tests/vectors/wire/`` are these samples encoded; run
``python3 -m tests.proto.samples --write`` only when the schema deliberately
changes (and say so in the commit).
"""

from __future__ import annotations

import sys
from pathlib import Path

from proto import codec as c
from proto.errors import ErrorCode

VECTOR_DIR = Path(__file__).resolve().parents[1] / "vectors" / "wire"

TOKEN = bytes(range(32))
DEV = bytes(range(100, 132))
ENV = c.Envelope(seq=7, channel_id=b"chan-1", data=b"\x00sealed\xff")

PARAMS: dict[str, c.Params] = {
    "health": c.HealthParams(),
    "ping": c.PingParams(payload=b"hello"),
    "whoami": c.WhoamiParams(),
    "registerStart": c.RegisterStartParams(username="alice", request=b"reg-req"),
    "registerFinish": c.RegisterFinishParams(username="alice", upload=b"upload"),
    "loginStart": c.LoginStartParams(username="alice", request=b"cred-req"),
    "loginFinish": c.LoginFinishParams(login_id=b"L" * 16, finalization=b"fin", device_id=DEV),
    "logout": c.LogoutParams(),
    "registerDevice": c.RegisterDeviceParams(
        hybrid_key=b"H" * 40, signature=b"S" * 64, delivery_access_key=b"K" * 32
    ),
    "uploadKeyPackages": c.UploadKeyPackagesParams(
        packages=(b"kp1", b"kp2", b""), last_resort=b"lr"
    ),
    "fetchKeyPackage": c.FetchKeyPackageParams(username="bob", device_id=DEV),
    "keyPackageCount": c.KeyPackageCountParams(),
    "listDevices": c.ListDevicesParams(username="bob"),
    "fetchHybridKey": c.FetchHybridKeyParams(device_id=DEV),
    "enqueue": c.EnqueueParams(
        recipient=DEV, channel_id=b"chan-1", payload=b"payload", access_key=b""
    ),
    "enqueueCommit": c.EnqueueCommitParams(
        channel_id=b"chan-1",
        epoch=2**40 + 1,
        fanout=(
            c.Recipient(recipient=DEV, payload=b"p1"),
            c.Recipient(recipient=b"x" * 32, payload=b"p2"),
        ),
    ),
    "fetch": c.FetchParams(after_seq=5, limit=100),
    "fetchWait": c.FetchWaitParams(after_seq=6, timeout_ms=30_000),
    "ack": c.AckParams(upto_seq=2**64 - 1),
    "postChannel": c.PostChannelParams(
        channel_id=b"chan-1", post_key=b"P" * 32, recipients=(DEV, b"x" * 32), payload=b"mls"
    ),
    "commitChannel": c.CommitChannelParams(
        channel_id=b"chan-1",
        epoch=7,
        post_key=b"P" * 32,
        commit=b"commit",
        members=(DEV,),
        welcome=b"welcome",
        joiners=(b"x" * 32,),
    ),
    "setChannelKey": c.SetChannelKeyParams(channel_id=b"chan-1", epoch=8, key_hash=b"H" * 32),
    "fetchWelcome": c.FetchWelcomeParams(channel_id=b"chan-1", epoch=8),
    "unlinkDevice": c.UnlinkDeviceParams(device_id=b"D" * 32),
}

RESULTS: dict[str, c.Result] = {
    "health": c.HealthResult(status="ok", version="0.1.0", uptime_ms=1234, store_backend="sqlite"),
    "ping": c.PingResult(payload=b"hello", server_time_ms=1_700_000_000_000),
    "whoami": c.WhoamiResult(
        username="alice", device_id=DEV, device_registered=True, session_expires_ms=99
    ),
    "registerStart": c.RegisterStartResult(response=b"reg-resp"),
    "registerFinish": c.RegisterFinishResult(),
    "loginStart": c.LoginStartResult(login_id=b"L" * 16, response=b"cred-resp"),
    "loginFinish": c.LoginFinishResult(token=TOKEN, expires_ms=2**63),
    "logout": c.LogoutResult(),
    "registerDevice": c.RegisterDeviceResult(),
    "uploadKeyPackages": c.UploadKeyPackagesResult(stock=2**32 - 1),
    "fetchKeyPackage": c.FetchKeyPackageResult(package=b"kp1", last_resort=False),
    "keyPackageCount": c.KeyPackageCountResult(count=3, has_last_resort=True),
    "listDevices": c.ListDevicesResult(
        devices=(
            c.Device(device_id=DEV, hybrid_key=b"H" * 40, signature=b"S" * 64),
            c.Device(device_id=b"d2", hybrid_key=b"", signature=b""),
        )
    ),
    "fetchHybridKey": c.FetchHybridKeyResult(hybrid_key=b"H" * 40, signature=b"S" * 64),
    "enqueue": c.EnqueueResult(seq=42),
    "enqueueCommit": c.EnqueueCommitResult(seqs=(10, 11), new_epoch=2**40 + 2),
    "fetch": c.FetchResult(envelopes=(ENV, c.Envelope(seq=8, channel_id=b"c2", data=b""))),
    "fetchWait": c.FetchWaitResult(envelopes=(ENV,)),
    "ack": c.AckResult(),
    "postChannel": c.PostChannelResult(stored=2),
    "commitChannel": c.CommitChannelResult(new_epoch=8),
    "setChannelKey": c.SetChannelKeyResult(),
    "fetchWelcome": c.FetchWelcomeResult(
        group_info=b"gi", ratchet_tree=b"\x01tree", tree_deltas=(b"\x02d1", b"\x02d2")
    ),
    "unlinkDevice": c.UnlinkDeviceResult(),
}

ERROR = c.ErrorInfo(code=ErrorCode.RATE_LIMITED, message="slow down", retry_after_ms=1500)


def request_for(name: str) -> c.Request:
    """The sample request of a method (authenticated with :data:`TOKEN`)."""
    return c.Request(auth=TOKEN, call=PARAMS[name])


def vectors() -> dict[str, bytes]:
    """File name -> expected bytes of every golden vector."""
    out: dict[str, bytes] = {}
    for name in PARAMS:
        out[f"{name}.request.bin"] = c.encode_request(request_for(name))
        out[f"{name}.response.bin"] = c.encode_response(c.Response(result=RESULTS[name]))
    out["error.response.bin"] = c.encode_response(c.Response(result=ERROR))
    return out


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python3 -m tests.proto.samples --write")
    VECTOR_DIR.mkdir(parents=True, exist_ok=True)
    for fname, data in vectors().items():
        (VECTOR_DIR / fname).write_bytes(data)
    print(f"wrote {len(vectors())} vectors to {VECTOR_DIR}")
