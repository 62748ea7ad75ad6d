"""Typed Cap'n Proto codec for the node protocol (``proto/schemas/node.capnp``).

This is the only module that imports :mod:`capnp`. Everything else sees frozen,
slotted, keyword-only dataclasses: one ``<Method>Params`` and one
``<Method>Result`` per method, plus :class:`Envelope`, :class:`Device`,
:class:`Recipient`, :class:`ErrorInfo`, :class:`Request` and :class:`Response`.

Wire format: standard Cap'n Proto stream framing (segment table, unpacked), so
``capnp decode proto/schemas/node.capnp Request < captured`` reads it. Every
reader gets an explicit byte limit, traversal limit and nesting limit
(:class:`CodecLimits`); any decoding failure raises
:class:`proto.errors.ProtocolError` and no capnp exception escapes.
"""

from __future__ import annotations

import dataclasses
import struct
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import capnp

from proto import messages
from proto._mls import capnp_validate as _capnp_validate
from proto.errors import EncodeError, ErrorCode, ProtocolError
from proto.messages import *  # noqa: F403 - codec re-exports every message type
from proto.messages import ErrorInfo, Request, Response, snake_case
from proto.rpc_api import (
    METHOD_BY_NAME,
    METHOD_BY_PARAMS,
    METHOD_BY_RESULT,
    METHOD_NAMES,
    METHODS,
)

__all__ = [
    *messages.__all__,
    "METHODS",
    "METHOD_BY_NAME",
    "METHOD_BY_PARAMS",
    "METHOD_BY_RESULT",
    "METHOD_NAMES",
    "DEFAULT_LIMITS",
    "SCHEMA_PATH",
    "CodecLimits",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "frame_length",
]

SCHEMA_PATH: Final = Path(__file__).with_name("schemas") / "node.capnp"
"""Path of the schema file (also used by tests with the reference ``capnp`` tool)."""

_schema: Any = capnp.load(str(SCHEMA_PATH))
_RequestSchema: Any = _schema.Request
_ResponseSchema: Any = _schema.Response


# --------------------------------------------------------------------- limits


@dataclass(frozen=True, slots=True, kw_only=True)
class CodecLimits:
    """Limits applied to every decoded message."""

    max_message_bytes: int = 4 * 1024 * 1024
    """Largest accepted message including its segment table."""
    max_segments: int = 64
    """Largest accepted segment count in the segment table."""
    traversal_limit_words: int = 2 * 4 * 1024 * 1024 // 8
    """Upper bound for capnp's traversal limit; the per-message limit is
    ``min(this, 2 * message words + 64)`` so pointer aliasing cannot amplify."""
    nesting_limit: int = 16
    """Pointer nesting depth (the schema needs at most 4)."""


DEFAULT_LIMITS: Final = CodecLimits()


# ------------------------------------------------------------------ methods


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


if _schema.NodeService.schema.method_names != METHOD_NAMES:  # pragma: no cover
    raise ImportError("proto/rpc_api.py is stale: run python -m proto.rpc_api_gen")
if tuple(_RequestSchema.schema.union_fields) != METHOD_NAMES or tuple(
    _ResponseSchema.schema.union_fields
) != ("error", *METHOD_NAMES):  # pragma: no cover - guards schema drift at import time
    raise ImportError("node.capnp Request/Response unions must list NodeService's methods")

_ERROR_NAMES: Final[dict[str, int]] = dict(_schema.ErrorCode.schema.enumerants)
if sorted(_ERROR_NAMES.values()) != [int(c) for c in ErrorCode] or any(
    ErrorCode[snake_case(n).upper()] != v for n, v in _ERROR_NAMES.items()
):  # pragma: no cover - guards schema/enum drift at import time
    raise ImportError("node.capnp ErrorCode does not match proto.errors.ErrorCode")


# ------------------------------------------------- generic field traversal

_DATA, _TEXT, _INT, _BOOL, _DATA_LIST, _INT_LIST, _STRUCT_LIST = range(7)
_FieldSpec = tuple[str, str, Any, int, type[Any] | None]  # py, capnp, field, kind, elem
_SPECS: dict[type[Any], tuple[_FieldSpec, ...]] = {}
_UINT_BITS: dict[tuple[type[Any], str], int] = {}


def _build_spec(cls: type[Any], capnp_struct: Any) -> tuple[_FieldSpec, ...]:
    hints = typing.get_type_hints(cls)
    out: list[_FieldSpec] = []
    schema_fields = capnp_struct.schema.fields
    for f in dataclasses.fields(cls):
        cname = _camel(f.name)
        if cname not in schema_fields:  # pragma: no cover - programming error
            raise ImportError(f"{cls.__name__}.{f.name} not in schema")
        hint = hints[f.name]
        elem: type[Any] | None = None
        if hint is bytes:
            kind = _DATA
        elif hint is str:
            kind = _TEXT
        elif hint is bool:
            kind = _BOOL
        elif hint is int:
            kind = _INT
            which = schema_fields[cname].proto.slot.type.which()
            _UINT_BITS[(cls, f.name)] = int(str(which).removeprefix("uint"))
        else:
            (arg, _ellipsis) = typing.get_args(hint)
            if arg is bytes:
                kind = _DATA_LIST
            elif arg is int:
                kind = _INT_LIST
            else:
                kind, elem = _STRUCT_LIST, arg
                _SPECS[arg] = _build_spec(arg, getattr(_schema, arg.__name__))
        out.append((f.name, cname, schema_fields[cname], kind, elem))
    return tuple(out)


for _m in METHODS:
    _SPECS[_m.params] = _build_spec(_m.params, getattr(_schema, _m.params.__name__))
    _SPECS[_m.result] = _build_spec(_m.result, getattr(_schema, _m.result.__name__))
del _m


def _fill_list(builder: Any, cn: str, kind: int, elem: Any, value: Any, where: str) -> None:
    items = tuple(value)
    lst = builder.init(cn, len(items))
    if kind == _STRUCT_LIST:
        for i, item in enumerate(items):
            if type(item) is not elem:
                raise EncodeError(f"{where} items must be {elem.__name__}")
            _FILLERS[elem](lst[i], item)
    elif kind == _INT_LIST:
        for i, item in enumerate(items):
            if type(item) is not int or not 0 <= item < (1 << 64):
                raise EncodeError(f"{where} items must be UInt64")
            lst[i] = item
    else:
        for i, item in enumerate(items):
            if not isinstance(item, bytes):
                raise EncodeError(f"{where} items must be bytes")
            lst[i] = item


def _make_filler(cls: type[Any]) -> Callable[[Any, Any], None]:
    """Build ``fill(builder, obj)`` for one struct (generated once at import).

    Validates every field (type, unsigned range) and sets non-default values
    with pre-resolved schema fields. The source is made from our own field
    names only.
    """
    ns: dict[str, Any] = {"EncodeError": EncodeError, "fill_list": _fill_list}
    lines = ["def fill(b, o):"]
    for i, (py, cn, fld, kind, elem) in enumerate(_SPECS[cls]):
        where = f"{cls.__name__}.{py}"
        ns[f"f{i}"], ns[f"e{i}"] = fld, elem
        lines.append(f"    v = o.{py}")
        if kind == _DATA:
            check, what = "not isinstance(v, bytes)", "bytes"
        elif kind == _TEXT:
            check, what = "not isinstance(v, str)", "str"
        elif kind == _BOOL:
            check, what = "not isinstance(v, bool)", "bool"
        elif kind == _INT:
            bits = _UINT_BITS[(cls, py)]
            check, what = f"type(v) is not int or not 0 <= v < {1 << bits}", f"UInt{bits}"
        else:
            lines.append(f"    fill_list(b, {cn!r}, {kind}, e{i}, v, {where!r})")
            continue
        lines.append(f"    if {check}:")
        lines.append(f"        raise EncodeError({where + ' must be ' + what!r})")
        lines.append("    if v:")
        lines.append(f"        b._set_by_field(f{i}, v)")
    lines.append("    return None")
    exec("\n".join(lines) + "\n", ns)  # noqa: S102
    filler: Callable[[Any, Any], None] = ns["fill"]
    return filler


_FILLERS: Final[dict[type[Any], Callable[[Any, Any], None]]] = {}
_FILLERS.update({cls: _make_filler(cls) for cls in _SPECS})


def _fill(builder: Any, obj: Any) -> None:
    _FILLERS[type(obj)](builder, obj)


def _make_reader(cls: type[Any]) -> Callable[[Any], Any]:
    """Build ``read(reader) -> cls`` for one struct (generated once at import).

    The source is made from our own dataclass field names only (never from
    input). pycapnp already returns bytes / str / int / bool for scalar
    fields, and ``_get_by_field`` with pre-resolved schema fields is ~3x
    faster than ``getattr``; a straight-line constructor call saves the
    generic loop and ``**kwargs``. Why this stays generated source with
    private accessors rather than closures over the public API (measured with
    ``bench/codec.py``): docs/perf/rpc.md, "Field access".
    """
    ns: dict[str, Any] = {"cls": cls, "READERS": _READERS}
    args = []
    for i, (py, _cn, fld, kind, elem) in enumerate(_SPECS[cls]):
        ns[f"f{i}"] = fld
        value = f"r._get_by_field(f{i})"
        if kind == _STRUCT_LIST:
            ns[f"e{i}"] = elem
            value = f"tuple([READERS[e{i}](x) for x in {value}])"
        elif kind >= _DATA_LIST:
            value = f"tuple({value})"
        args.append(f"{py}={value}")
    exec(f"def read(r):\n    return cls({', '.join(args)})\n", ns)  # noqa: S102
    reader: Callable[[Any], Any] = ns["read"]
    return reader


_READERS: Final[dict[type[Any], Callable[[Any], Any]]] = {}
_READERS.update({cls: _make_reader(cls) for cls in _SPECS})


def _read(reader: Any, cls: type[Any]) -> Any:
    return _READERS[cls](reader)


_REQ_FIELDS: Final = dict(_RequestSchema.schema.fields)
_RESP_FIELDS: Final = dict(_ResponseSchema.schema.fields)
_AUTH: Final = _REQ_FIELDS["auth"]


# ------------------------------------------------------------------ framing

_U32 = struct.Struct("<I")


def frame_length(buf: bytes | bytearray | memoryview, limits: CodecLimits = DEFAULT_LIMITS) -> int:
    """Length in bytes of the framed message at the start of ``buf``.

    Returns 0 when ``buf`` does not yet hold the whole segment table. The
    returned length may exceed ``len(buf)`` (the message is incomplete).

    Raises:
        ProtocolError: the segment table exceeds ``limits`` (too many segments
            or a message larger than ``max_message_bytes``).
    """
    if len(buf) < 4:
        return 0
    count: int = _U32.unpack_from(buf, 0)[0] + 1
    if count > limits.max_segments:
        raise ProtocolError(f"message has {count} segments (limit {limits.max_segments})")
    header = (4 + 4 * count + 7) & ~7
    if len(buf) < header:
        return 0
    words: int = sum(struct.unpack_from(f"<{count}I", buf, 4))
    total = header + 8 * words
    if total > limits.max_message_bytes:
        raise ProtocolError(f"message of {total} bytes exceeds {limits.max_message_bytes}")
    return total


def _open(schema: Any, data: bytes, limits: CodecLimits) -> Any:
    """Check the framing against ``limits`` and return a root reader."""
    size = len(data)
    if size > limits.max_message_bytes:
        raise ProtocolError(f"message of {size} bytes exceeds {limits.max_message_bytes}")
    if size >= 8 and data[0:4] == b"\0\0\0\0":  # one segment: the common case
        if 8 + 8 * _U32.unpack_from(data, 4)[0] != size:
            raise ProtocolError("truncated message or trailing bytes after it")
        segments = [memoryview(data)[8:]]
    else:
        if frame_length(data, limits) != size or size == 0:
            raise ProtocolError("truncated message or trailing bytes after it")
        count = _U32.unpack_from(data, 0)[0] + 1
        view = memoryview(data)
        pos = (4 + 4 * count + 7) & ~7
        segments = []
        for words in struct.unpack_from(f"<{count}I", data, 4):
            segments.append(view[pos : pos + 8 * words])
            pos += 8 * words
    traversal = _traversal_limit(size, limits)
    # from_segments: no copy, and no context manager round trip per message.
    return schema.from_segments(
        segments, traversal_limit_in_words=traversal, nesting_limit=limits.nesting_limit
    )


def _traversal_limit(size: int, limits: CodecLimits) -> int:
    return min(limits.traversal_limit_words, 2 * (size // 8) + 64)


def _validate(data: bytes, limits: CodecLimits) -> None:
    """Check the segment table and every pointer before pycapnp reads ``data``.

    pycapnp does not translate every C++ exception: a malformed far or list
    pointer reaching some of its entry points aborts the process. The Rust
    ``capnp`` crate (``proto._mls.capnp_validate``) walks the whole message
    under the same traversal and nesting limits and returns an error instead,
    so only structurally sound messages reach pycapnp (docs/PROTOCOL.md,
    "Decoding untrusted bytes").
    """
    try:
        _capnp_validate(data, _traversal_limit(len(data), limits), limits.nesting_limit)
    except ValueError as exc:
        raise ProtocolError(f"malformed message: {exc}") from None


def _decode(schema: Any, data: bytes, limits: CodecLimits, body: Callable[[Any], Any]) -> Any:
    try:
        reader = _open(schema, data, limits)
        _validate(data, limits)
        return body(reader)
    except ProtocolError:
        raise
    except Exception as exc:  # capnp.KjException, ValueError, ... never escape
        raise ProtocolError(f"malformed message: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    # KjException text starts with a C++ source location; keep the description.
    return first.rsplit(": ", 1)[-1][:200]


# ----------------------------------------------------------------- requests


def encode_request(request: Request) -> bytes:
    """Encode a :class:`Request` in stream framing.

    Raises:
        EncodeError: a field has the wrong type or an integer is out of range.
    """
    method = METHOD_BY_PARAMS.get(type(request.call))
    if method is None:
        raise EncodeError(f"not a params type: {type(request.call).__name__}")
    if not isinstance(request.auth, bytes):
        raise EncodeError("Request.auth must be bytes")
    msg = _RequestSchema.new_message()
    if request.auth:
        msg._set_by_field(_AUTH, request.auth)
    try:
        _fill(msg.init(method.name), request.call)
        return bytes(msg.to_bytes())
    except EncodeError:
        raise
    except Exception as exc:
        raise EncodeError(f"cannot encode {method.name}: {_short(exc)}") from None


def _request_body(reader: Any) -> Request:
    method = METHOD_BY_NAME[reader._which_str()]
    params = _read(reader._get_by_field(_REQ_FIELDS[method.name]), method.params)
    return Request(auth=reader._get_by_field(_AUTH), call=params)


def decode_request(data: bytes, limits: CodecLimits = DEFAULT_LIMITS) -> Request:
    """Decode one framed ``Request`` occupying all of ``data``.

    Raises:
        ProtocolError: malformed, truncated, over a limit, or an unknown method.
    """
    result: Request = _decode(_RequestSchema, data, limits, _request_body)
    return result


# ---------------------------------------------------------------- responses


def encode_response(response: Response) -> bytes:
    """Encode a :class:`Response` in stream framing.

    Raises:
        EncodeError: a field has the wrong type or an integer is out of range.
    """
    msg = _ResponseSchema.new_message()
    res = response.result
    try:
        if isinstance(res, ErrorInfo):
            err = msg.init("error")
            err.code = int(res.code)
            if res.message:
                err.message = res.message
            err.retryAfterMs = res.retry_after_ms
        else:
            method = METHOD_BY_RESULT.get(type(res))
            if method is None:
                raise EncodeError(f"not a result type: {type(res).__name__}")
            _fill(msg.init(method.name), res)
        return bytes(msg.to_bytes())
    except EncodeError:
        raise
    except Exception as exc:
        raise EncodeError(f"cannot encode response: {_short(exc)}") from None


def _response_body(reader: Any) -> Response:
    which = reader._which_str()
    if which == "error":
        err = reader.error
        raw = err.code.raw
        try:
            code = ErrorCode(raw)
        except ValueError:  # a newer node's code: treat as internal
            code = ErrorCode.INTERNAL
        return Response(
            result=ErrorInfo(code=code, message=err.message, retry_after_ms=err.retryAfterMs)
        )
    method = METHOD_BY_NAME[which]
    return Response(result=_read(reader._get_by_field(_RESP_FIELDS[which]), method.result))


def decode_response(data: bytes, limits: CodecLimits = DEFAULT_LIMITS) -> Response:
    """Decode one framed ``Response`` occupying all of ``data``.

    Raises:
        ProtocolError: malformed, truncated, over a limit, or an unknown member.
    """
    result: Response = _decode(_ResponseSchema, data, limits, _response_body)
    return result
