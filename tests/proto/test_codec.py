"""Codec: golden vectors, round trips, the reference capnp tool, hostile input."""

from __future__ import annotations

import shutil
import struct
import subprocess
from typing import Any

import pytest

from proto import codec as c
from proto.errors import EncodeError, ErrorCode, ProtocolError, RateLimited
from tests.proto import samples

capnp_tool = shutil.which("capnp")
needs_capnp = pytest.mark.skipif(capnp_tool is None, reason="capnp reference tool missing")


def test_every_method_has_a_sample() -> None:
    assert [m.name for m in c.METHODS] == list(samples.PARAMS) == list(samples.RESULTS)
    assert [m.streaming for m in c.METHODS].count(True) == 1


def test_error_code_ordinals_match_schema() -> None:
    assert {c.snake_case(k).upper(): v for k, v in c._ERROR_NAMES.items()} == {
        e.name: int(e) for e in ErrorCode
    }


@pytest.mark.parametrize("fname", sorted(samples.vectors()))
def test_golden_vector_byte_for_byte(fname: str) -> None:
    expected = (samples.VECTOR_DIR / fname).read_bytes()
    assert samples.vectors()[fname] == expected


@pytest.mark.parametrize("name", list(samples.PARAMS))
def test_request_round_trip(name: str) -> None:
    req = samples.request_for(name)
    assert c.decode_request(c.encode_request(req)) == req


@pytest.mark.parametrize("name", list(samples.RESULTS))
def test_response_round_trip(name: str) -> None:
    resp = c.Response(result=samples.RESULTS[name])
    assert c.decode_response(c.encode_response(resp)) == resp


def test_error_round_trip_and_exception() -> None:
    resp = c.decode_response(c.encode_response(c.Response(result=samples.ERROR)))
    assert resp.result == samples.ERROR
    with pytest.raises(RateLimited) as info:
        c.result_or_raise(resp)
    assert info.value.retry_after_ms == 1500
    assert c.ErrorInfo.from_exception(info.value) == samples.ERROR


def test_unknown_error_code_becomes_internal() -> None:
    data = bytearray(c.encode_response(c.Response(result=samples.ERROR)))
    # Error struct: the code is the first UInt16 of its data section; find it by value.
    idx = data.index(struct.pack("<H", int(ErrorCode.RATE_LIMITED)) + b"\x00\x00")
    data[idx : idx + 2] = struct.pack("<H", 999)
    resp = c.decode_response(bytes(data))
    assert isinstance(resp.result, c.ErrorInfo)
    assert resp.result.code is ErrorCode.INTERNAL


@needs_capnp
def test_schema_compiles_with_reference_compiler() -> None:
    subprocess.run(
        [capnp_tool or "", "compile", "-o-", str(c.SCHEMA_PATH)], check=True, capture_output=True
    )


@needs_capnp
@pytest.mark.parametrize(
    ("fname", "root"),
    [
        ("enqueueCommit.request.bin", "Request"),
        ("listDevices.response.bin", "Response"),
        ("error.response.bin", "Response"),
    ]
    + [(f"{n}.request.bin", "Request") for n in ("health", "fetchWait", "uploadKeyPackages")],
)
def test_reference_tool_decodes_vectors(fname: str, root: str) -> None:
    data = (samples.VECTOR_DIR / fname).read_bytes()
    out = subprocess.run(
        [capnp_tool or "", "decode", str(c.SCHEMA_PATH), root],
        input=data,
        check=True,
        capture_output=True,
    ).stdout.decode()
    member = fname.split(".")[0]
    assert (member if member != "error" else "error =") in out


@needs_capnp
def test_reference_tool_reads_a_response_stream() -> None:
    """fetchWait answers with several messages back to back; capnp reads them all."""
    one = c.encode_response(c.Response(result=samples.RESULTS["fetchWait"]))
    out = subprocess.run(
        [capnp_tool or "", "decode", str(c.SCHEMA_PATH), "Response"],
        input=one * 3,
        check=True,
        capture_output=True,
    ).stdout.decode()
    assert out.count("fetchWait") == 3


def test_frame_length_incremental() -> None:
    data = c.encode_request(samples.request_for("enqueueCommit"))
    assert c.frame_length(data[:3]) == 0
    assert c.frame_length(data[:8]) == len(data)
    assert c.frame_length(data) == len(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage!",
        b"\x00" * 8,
        b"\xff\xff\xff\xff" + b"\x00" * 60,
        struct.pack("<II", 0, 0x7FFFFFFF),  # claims 16 GiB
    ],
)
def test_garbage_raises_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        c.decode_request(data)
    with pytest.raises(ProtocolError):
        c.decode_response(data)


def test_truncated_and_trailing_bytes() -> None:
    data = c.encode_request(samples.request_for("ping"))
    for cut in range(len(data)):
        with pytest.raises(ProtocolError):
            c.decode_request(data[:cut])
    with pytest.raises(ProtocolError):
        c.decode_request(data + b"\x00" * 8)


def test_size_limit() -> None:
    big = c.encode_request(c.Request(call=c.PingParams(payload=b"x" * 5000)))
    with pytest.raises(ProtocolError, match="exceeds"):
        c.decode_request(big, c.CodecLimits(max_message_bytes=4096))


def deep_message(depth: int) -> bytes:
    """A Request whose ``auth`` pointer starts a chain of ``depth`` nested structs."""
    words: list[bytes] = []
    # root struct pointer: offset 0, data 1 word, pointers 2 -> Request layout
    words.append(struct.pack("<IHH", 0, 1, 2))
    words.append(b"\x00" * 8)  # data section (union tag 0 = health)
    # pointer 0 (auth): struct pointer to the next word, 0 data words, 1 pointer
    words.append(struct.pack("<IHH", 0 << 2, 0, 1))
    words.append(b"\x00" * 8)  # pointer 1 (health params): null
    for i in range(depth):
        last = i == depth - 1
        words.append(b"\x00" * 8 if last else struct.pack("<IHH", 0, 0, 1))
    body = b"".join(words)
    return struct.pack("<II", 0, len(body) // 8) + body


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(ProtocolError):
        c.decode_request(deep_message(100))


def unknown_tag_message() -> bytes:
    data = bytearray(c.encode_request(c.Request(call=c.AckParams(upto_seq=1))))
    # root struct data section starts at byte 16; union tag is its first UInt16.
    assert struct.unpack_from("<H", data, 16)[0] == 18
    struct.pack_into("<H", data, 16, 999)
    return bytes(data)


def test_unknown_union_tag() -> None:
    with pytest.raises(ProtocolError):
        c.decode_request(unknown_tag_message())


@pytest.mark.parametrize(
    "call",
    [
        c.FetchParams(after_seq=-1, limit=1),
        c.FetchParams(after_seq=0, limit=2**32),
        c.PingParams(payload="text"),  # type: ignore[arg-type]
        c.UploadKeyPackagesParams(packages=("x",)),  # type: ignore[arg-type]
        c.EnqueueCommitParams(
            channel_id=b"",
            epoch=0,
            fanout=(c.Envelope(seq=1, channel_id=b"", data=b""),),  # type: ignore[arg-type]
        ),
    ],
)
def test_encode_rejects_bad_values(call: c.Params) -> None:
    with pytest.raises(EncodeError):
        c.encode_request(c.Request(call=call))


def _same_as_public_api(reader: Any, cls: type[Any]) -> None:
    """Every field read by the codec's private accessor equals pycapnp's public attribute."""
    for _py, cname, field, kind, elem in c._SPECS[cls]:
        public = getattr(reader, cname)
        seam = reader._get_by_field(field)
        if elem is not None:
            assert len(public) == len(seam)
            for pub_item, seam_item in zip(public, seam, strict=True):
                _same_as_public_api(pub_item, elem)
                _same_as_public_api(seam_item, elem)
        elif kind >= c._DATA_LIST:
            assert list(public) == list(seam)
        else:
            assert public == seam


@pytest.mark.parametrize("name", list(samples.PARAMS))
def test_private_field_access_matches_public_pycapnp_api(name: str) -> None:
    """pycapnp's private accessors the codec uses agree with its public API.

    The codec reads through ``_get_by_field`` / ``_which_str`` for speed
    (docs/perf/rpc.md, "Field access"); a pycapnp upgrade that changes them
    fails here, not in production.
    """
    data = c.encode_request(samples.request_for(name))
    root = c._open(c._RequestSchema, data, c.DEFAULT_LIMITS)
    assert root._which_str() == root.which() == name
    assert root._get_by_field(c._AUTH) == root.auth == samples.TOKEN
    _same_as_public_api(getattr(root, name), type(samples.PARAMS[name]))
    data = c.encode_response(c.Response(result=samples.RESULTS[name]))
    root = c._open(c._ResponseSchema, data, c.DEFAULT_LIMITS)
    assert root._which_str() == root.which() == name
    _same_as_public_api(getattr(root, name), type(samples.RESULTS[name]))
