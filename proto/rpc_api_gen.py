"""Generate ``proto/rpc_api.py`` from ``proto/schemas/node.capnp``.

::

    python -m proto.rpc_api_gen            # rewrite proto/rpc_api.py
    python -m proto.rpc_api_gen --check    # exit 1 if it is stale

The schema's ``NodeService`` interface is the method table: each method's
name, ordinal, params/result struct and ``$streaming`` annotation. This tool
pairs each method with its ``<Name>Params`` / ``<Name>Result`` dataclasses in
:mod:`proto.messages` and writes the method table (``METHODS``), the node
handler protocol (``NodeHandler``) and the typed client stubs (``NodeCalls``).
``tests/proto/test_rpc_api.py`` fails when the checked-in file differs from
this tool's output.

A development tool: it loads the schema with ``capnp`` itself (the runtime's
only capnp importer stays :mod:`proto.codec`) and never imports the generated
module, so it still runs when that module is stale. Output is formatted with
``ruff format``.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any, Final

from proto import messages
from proto.messages import Params, Result, snake_case

SCHEMA_PATH: Final = Path(__file__).with_name("schemas") / "node.capnp"
OUTPUT_PATH: Final = Path(__file__).with_name("rpc_api.py")
STREAMING_ANNOTATION: Final = 0xDD068D811ADF0304
"""Id of ``annotation streaming`` in node.capnp."""


class SchemaMismatch(Exception):
    """The schema and :mod:`proto.messages` do not fit together."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MethodSpec:
    """One ``NodeService`` method as read from the schema."""

    name: str
    ordinal: int
    params: type[Params]
    result: type[Result]
    streaming: bool


def read_methods(
    schema_path: Path = SCHEMA_PATH, namespace: Any = messages
) -> tuple[MethodSpec, ...]:
    """The methods of ``NodeService`` in ordinal order, paired with their dataclasses.

    Each params/result struct is matched with the class of the same name in
    ``namespace`` (:mod:`proto.messages`).

    Raises:
        SchemaMismatch: a params/result struct has no dataclass of the same
            name deriving from :class:`Params` / :class:`Result`, or a method
            carries an unknown annotation.
    """
    import capnp  # only this tool and proto.codec load schemas

    _check_parses(schema_path)

    # A parser of its own: another copy of a file id already loaded by the
    # process (proto.codec's) would abort in the shared default parser.
    schema: Any = capnp.SchemaParser().load(str(schema_path))
    service = schema.NodeService.schema
    by_id = {
        node.schema.node.id: name
        for name in dir(schema)
        if not name.startswith("_")
        and (node := getattr(schema, name)) is not None
        and hasattr(node, "schema")
        and hasattr(node.schema, "node")
    }
    out: list[MethodSpec] = []
    for ordinal, proto in enumerate(service.node.interface.methods):
        ids = {int(a.id) for a in proto.annotations}
        if ids - {STREAMING_ANNOTATION}:
            raise SchemaMismatch(f"{proto.name}: unknown annotation {sorted(ids)}")
        params = _dataclass(namespace, by_id, int(proto.paramStructType), Params, proto.name)
        result = _dataclass(namespace, by_id, int(proto.resultStructType), Result, proto.name)
        out.append(
            MethodSpec(
                name=str(proto.name),
                ordinal=ordinal,
                params=params,
                result=result,
                streaming=STREAMING_ANNOTATION in ids,
            )
        )
    return tuple(out)


def _check_parses(schema_path: Path) -> None:
    """Raise :class:`SchemaMismatch` with the compiler's message if the schema is invalid.

    pycapnp aborts the process on a schema error instead of raising, so a
    child process parses it first.
    """
    done = subprocess.run(  # noqa: S603 - fixed argv, our own interpreter
        [
            sys.executable,
            "-c",
            "import sys, capnp; capnp.SchemaParser().load(sys.argv[1])",
            str(schema_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        errors = [line.strip() for line in done.stderr.splitlines() if "failed:" in line]
        raise SchemaMismatch("; ".join(errors) or done.stderr.strip()[-500:])


def _dataclass(
    namespace: Any, by_id: dict[int, str], struct_id: int, base: type[Any], method: str
) -> Any:
    name = by_id.get(struct_id)
    if name is None:
        raise SchemaMismatch(f"{method}: params/result must be named top-level structs")
    cls = getattr(namespace, name, None)
    if not (isinstance(cls, type) and issubclass(cls, base) and dataclasses.is_dataclass(cls)):
        raise SchemaMismatch(
            f"{method}: proto/messages.py needs a dataclass `class {name}({base.__name__})`"
        )
    return cls


# ------------------------------------------------------------------ emitting


def _stub_type(hint: Any) -> tuple[str, bool]:
    """Annotation of a stub keyword for a field of type ``hint``; True = convert with tuple()."""
    if hint in (bytes, str, int, bool):
        return hint.__name__, False
    (arg, _ellipsis) = typing.get_args(hint)
    return f"Sequence[{arg.__name__}]", True


def _doc(cls: type[Any]) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0]


def _field_types(specs: tuple[MethodSpec, ...]) -> set[str]:
    names: set[str] = set()
    for spec in specs:
        for hint in typing.get_type_hints(spec.params).values():
            for arg in typing.get_args(hint):
                if isinstance(arg, type) and arg not in (bytes, str, int, bool):
                    names.add(arg.__name__)
    return names


def _docstring(text: str) -> list[str]:
    """A method docstring at 8 spaces, wrapped to the 100-column line limit."""
    one = f'        """{text}"""'
    if len(one) <= 100:
        return [one]
    wrapped = textwrap.wrap(text, 100 - 8 - 6)
    return ['        """' + wrapped[0], *("        " + w for w in wrapped[1:]), '        """']


def render(specs: tuple[MethodSpec, ...]) -> str:
    """The source of ``proto/rpc_api.py`` before formatting."""
    imported = sorted(
        {s.params.__name__ for s in specs}
        | {s.result.__name__ for s in specs}
        | _field_types(specs)
        | {"CallContext", "Method", "Params", "Result", "expect_result"}
    )
    lines = [
        '"""The RPC surface of ``proto/schemas/node.capnp``: method table, handler protocol,',
        "client stubs.",
        "",
        "GENERATED by ``python -m proto.rpc_api_gen`` from the schema's ``NodeService``",
        "and the dataclasses in :mod:`proto.messages`; do not edit (docs/PROTOCOL.md,",
        '"Adding a method").',
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import abc",
        "from collections.abc import AsyncIterator, Sequence",
        "from typing import Any, Final, Generic, Protocol, TypeVar",
        "",
        f"from proto.messages import ({', '.join(imported)})",
        "",
        "__all__ = [",
        '    "METHODS", "METHOD_BY_NAME", "METHOD_BY_PARAMS", "METHOD_BY_RESULT",',
        '    "METHOD_NAMES", "NodeCalls", "NodeHandler",',
        "]",
        "",
        "METHODS: Final[tuple[Method, ...]] = (",
    ]
    for s in specs:
        streaming = ", streaming=True" if s.streaming else ""
        lines.append(
            f"    Method(name={s.name!r}, attr={snake_case(s.name)!r}, "
            f"params={s.params.__name__}, result={s.result.__name__}{streaming}),"
        )
    lines += [
        ")",
        '"""Every method of ``NodeService`` in ordinal order."""',
        "",
        "METHOD_NAMES: Final = tuple(m.name for m in METHODS)",
        '"""Schema names in ordinal order."""',
        "METHOD_BY_NAME: Final[dict[str, Method]] = {m.name: m for m in METHODS}",
        '"""Schema name -> method."""',
        "METHOD_BY_PARAMS: Final[dict[type[Any], Method]] = {m.params: m for m in METHODS}",
        '"""Params dataclass -> method."""',
        "METHOD_BY_RESULT: Final[dict[type[Any], Method]] = {m.result: m for m in METHODS}",
        '"""Result dataclass -> method."""',
        "",
        "",
        "class NodeHandler(Protocol):",
        '    """What the node implements: one method per ``NodeService`` method.',
        "",
        "    Raise a :class:`proto.errors.RpcError` subclass to answer with that error",
        "    code; any other exception answers ``internal`` with a generic message (it is",
        "    logged by the server, never sent). Handler work is cancelled",
        "    (``asyncio.CancelledError``) when the client resets the stream or the",
        "    connection drops. A streaming method is an ``async def`` generator: each",
        "    yielded result is sent as one ``Response``, returning ends the stream (FIN),",
        "    and the generator is closed when the client stops the subscription.",
        '    """',
    ]
    for s in specs:
        p, r, attr = s.params.__name__, s.result.__name__, snake_case(s.name)
        lines.append("")
        if s.streaming:
            lines.append(
                f"    def {attr}(self, ctx: CallContext, params: {p}) -> AsyncIterator[{r}]:"
            )
        else:
            lines.append(f"    async def {attr}(self, ctx: CallContext, params: {p}) -> {r}:")
        lines += _docstring(f"``{s.name}``: {_doc(s.params)}")
        lines.append("        ...")
    lines += [
        "",
        "",
        'S = TypeVar("S")',
        "",
        "",
        "class NodeCalls(abc.ABC, Generic[S]):",
        '    """One typed method per ``NodeService`` method, on top of :meth:`call`.',
        "",
        "    Each builds the params dataclass from keyword arguments, makes the call and",
        "    returns the method's result dataclass (or raises the node's",
        "    :class:`proto.errors.RpcError` subclass); a streaming method returns the",
        "    implementation's subscription (``S``). ``auth`` overrides the client's token",
        '    for one call (``b""`` = unauthenticated, e.g. sealed-sender ``enqueue``).',
        '    """',
        "",
        "    @abc.abstractmethod",
        "    async def call(self, params: Params, *, auth: bytes | None = None) -> Result:",
        '        """Make one unary call."""',
        "",
        "    @abc.abstractmethod",
        "    def subscribe(self, params: Params, *, auth: bytes | None = None) -> S:",
        '        """Start a streaming call."""',
    ]
    for s in specs:
        p, r, attr = s.params.__name__, s.result.__name__, snake_case(s.name)
        hints = typing.get_type_hints(s.params)
        kwargs: list[str] = []
        values: list[str] = []
        for f in dataclasses.fields(typing.cast(Any, s.params)):
            ann, convert = _stub_type(hints[f.name])
            default = "" if f.default is dataclasses.MISSING else f" = {f.default!r}"
            kwargs.append(f"{f.name}: {ann}{default}")
            values.append(f"{f.name}=tuple({f.name})" if convert else f"{f.name}={f.name}")
        sig = ", ".join(["self", "*", *kwargs, "auth: bytes | None = None"])
        lines.append("")
        build = f"        params = {p}({', '.join(values)})"
        if s.streaming:
            lines.append(f"    def {attr}({sig}) -> S:")
            lines += _docstring(f"``{s.name}``: {_doc(s.params)}")
            lines.append(build)
            lines.append("        return self.subscribe(params, auth=auth)")
        else:
            lines.append(f"    async def {attr}({sig}) -> {r}:")
            lines += _docstring(f"``{s.name}``: {_doc(s.params)}")
            lines.append(build)
            lines.append(f"        return expect_result(await self.call(params, auth=auth), {r})")
    return "\n".join(lines) + "\n"


def generate(schema_path: Path = SCHEMA_PATH) -> str:
    """The formatted source of ``proto/rpc_api.py`` for ``schema_path``."""
    source = render(read_methods(schema_path))
    done = subprocess.run(  # noqa: S603 - fixed argv, our own interpreter
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(OUTPUT_PATH), "-"],
        input=source,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    """Write (or ``--check``) ``proto/rpc_api.py``."""
    parser = argparse.ArgumentParser(prog="python -m proto.rpc_api_gen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    try:
        source = generate()
    except SchemaMismatch as exc:
        print(f"node.capnp: {exc}", file=sys.stderr)
        return 2
    current = OUTPUT_PATH.read_text() if OUTPUT_PATH.exists() else ""
    if args.check:
        if current != source:
            print(f"{OUTPUT_PATH} is stale: run python -m proto.rpc_api_gen", file=sys.stderr)
            return 1
        return 0
    if current != source:
        OUTPUT_PATH.write_text(source)
        print(f"wrote {OUTPUT_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
