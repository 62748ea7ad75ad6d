"""The RPC surface derived from node.capnp: the checked-in file is current, and
adding a method to the schema yields its table entry, handler and client stub."""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from proto import messages, rpc_api, rpc_api_gen
from proto.messages import Params, Result
from proto.rpc_api_gen import SCHEMA_PATH, SchemaMismatch


def test_checked_in_rpc_api_is_current() -> None:
    assert rpc_api_gen.generate() == rpc_api_gen.OUTPUT_PATH.read_text(), (
        "proto/rpc_api.py is stale: run python -m proto.rpc_api_gen"
    )
    assert rpc_api_gen.main(["--check"]) == 0


def test_method_table_follows_the_schema() -> None:
    specs = rpc_api_gen.read_methods()
    assert [(s.name, s.params, s.result, s.streaming) for s in specs] == [
        (m.name, m.params, m.result, m.streaming) for m in rpc_api.METHODS
    ]
    assert [m.name for m in rpc_api.METHODS if m.streaming] == ["fetchWait"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EchoTwiceParams(Params):
    """Echo a payload twice."""

    payload: bytes
    tags: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class EchoTwiceResult(Result):
    """The payload, twice."""

    payload: bytes


def _schema_with_echo_twice(tmp_path: Path, *, streaming: bool) -> Path:
    """node.capnp plus ``echoTwice`` after the last method, as docs/PROTOCOL.md says."""
    n = len(rpc_api.METHODS)
    text = SCHEMA_PATH.read_text()
    text = text.replace(
        "# ------------------------------------------------------------ wire messages",
        "struct EchoTwiceParams {\n  payload @0 :Data;\n  tags @1 :List(Data);\n}\n"
        "struct EchoTwiceResult { payload @0 :Data; }\n\n"
        "# ------------------------------------------------------------ wire messages",
    )
    for struct, member in (("Request", "EchoTwiceParams"), ("Response", "EchoTwiceResult")):
        start = text.index(f"struct {struct} {{")
        end = text.index("\n  }\n}", start)  # the end of its union
        text = text[:end] + f"\n    echoTwice @{n + 1} :{member};" + text[end:]
    mark = " $streaming" if streaming else ""
    end = text.index("\n}", text.index("interface NodeService {"))
    line = f"\n  echoTwice @{n} EchoTwiceParams -> EchoTwiceResult{mark};"
    text = text[:end] + line + text[end:]
    path = tmp_path / "node.capnp"
    path.write_text(text)
    return path


def _namespace() -> types.SimpleNamespace:
    names = {n: getattr(messages, n) for n in messages.__all__}
    return types.SimpleNamespace(
        **names, EchoTwiceParams=EchoTwiceParams, EchoTwiceResult=EchoTwiceResult
    )


def test_a_new_schema_method_yields_table_entry_handler_and_stub(tmp_path: Path) -> None:
    schema = _schema_with_echo_twice(tmp_path, streaming=False)
    specs = rpc_api_gen.read_methods(schema, _namespace())
    assert specs[-1].name == "echoTwice" and specs[-1].ordinal == len(rpc_api.METHODS)
    assert (specs[-1].params, specs[-1].result) == (EchoTwiceParams, EchoTwiceResult)
    source = rpc_api_gen.render(specs)
    assert (
        "Method(name='echoTwice', attr='echo_twice', params=EchoTwiceParams, "
        "result=EchoTwiceResult)," in source
    )
    assert (
        "    async def echo_twice(self, ctx: CallContext, params: EchoTwiceParams) "
        "-> EchoTwiceResult:\n" in source
    )
    assert (
        "    async def echo_twice(self, *, payload: bytes, tags: Sequence[bytes] = (), "
        "auth: bytes | None = None) -> EchoTwiceResult:\n"
        '        """``echoTwice``: Echo a payload twice."""\n'
        "        params = EchoTwiceParams(payload=payload, tags=tuple(tags))\n"
        "        return expect_result(await self.call(params, auth=auth), EchoTwiceResult)\n"
        in source
    )
    compile(source, "rpc_api.py", "exec")


def test_a_streaming_method_is_a_generator_handler_and_a_subscription(tmp_path: Path) -> None:
    schema = _schema_with_echo_twice(tmp_path, streaming=True)
    specs = rpc_api_gen.read_methods(schema, _namespace())
    assert specs[-1].streaming
    source = rpc_api_gen.render(specs)
    assert "result=EchoTwiceResult, streaming=True)," in source
    assert (
        "    def echo_twice(self, ctx: CallContext, params: EchoTwiceParams) "
        "-> AsyncIterator[EchoTwiceResult]:\n" in source
    )
    assert "        return self.subscribe(params, auth=auth)\n" in source


def test_a_method_without_dataclasses_is_a_clear_error(tmp_path: Path) -> None:
    schema = _schema_with_echo_twice(tmp_path, streaming=False)
    with pytest.raises(SchemaMismatch, match=r"class EchoTwiceParams\(Params\)"):
        rpc_api_gen.read_methods(schema)


def test_an_invalid_schema_is_a_clear_error_not_an_abort(tmp_path: Path) -> None:
    path = tmp_path / "node.capnp"
    path.write_text(SCHEMA_PATH.read_text().replace("ack @18 ", "ack @17 "))
    with pytest.raises(SchemaMismatch, match="Duplicate ordinal"):
        rpc_api_gen.read_methods(path)
