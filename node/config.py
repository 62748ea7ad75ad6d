"""Node configuration: one dataclass, parsed once at the CLI edge.

Sources, lowest to highest precedence: built-in defaults, a TOML file
(``--config`` or ``QPC_NODE_CONFIG``), environment variables ``QPC_NODE_<FIELD>``
(upper-case field name), command-line flags. The result is passed down
explicitly; nothing reads configuration from a module global.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path

import platformdirs

from proto.errors import ConfigError
from proto.event_loop import LOOPS, check_loop

ENV_PREFIX = "QPC_NODE_"
KIB = 1024


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """Every setting of a node, each with a default."""

    host: str = "127.0.0.1"
    """Address to listen on (UDP)."""
    port: int = 7000
    """UDP port to listen on; 0 picks a free port."""
    data_dir: Path = dataclasses.field(
        default_factory=lambda: Path(platformdirs.user_data_dir("quicnprotochat-node"))
    )
    """Directory for the SQLite database and the generated certificate."""
    store: str = ""
    """PostgreSQL DSN (``postgresql://USER@HOST/DB``); empty: SQLite in ``data_dir``."""
    pg_pool_size: int = 8
    """PostgreSQL connections per node process (plus one for LISTEN)."""
    workers: int = 1
    """Node processes sharing the UDP port (SO_REUSEPORT); more than 1 needs ``store``."""
    worker_id: int = -1
    """Set by ``--workers`` on each worker process (0..workers-1); -1: not a worker."""
    cert: Path | None = None
    """PEM certificate chain; with ``key``. Unset: a self-signed one in ``data_dir``."""
    key: Path | None = None
    """PEM private key for ``cert``."""
    retention_s: int = 30 * 24 * 3600
    """Undelivered messages older than this are deleted."""
    max_payload_bytes: int = 256 * KIB
    """Largest accepted message payload (enqueue, postChannel, each fan-out entry)."""
    max_commit_bytes: int = 2 * 1024 * KIB
    """Largest commit, Welcome, GroupInfo and sealed ratchet tree of one
    commitChannel (hybrid suite: the tree is ~1.4 MB at 1,000 members)."""
    max_request_bytes: int = 4 * 1024 * KIB
    """Largest accepted request on the wire (enforced by the RPC layer)."""
    max_queue_depth: int = 1000
    """Messages an inbox may hold before enqueue answers queueFull."""
    max_fetch: int = 500
    """Most envelopes returned by one fetch or fetchWait response."""
    max_fanout: int = 5000
    """Most recipients of one enqueueCommit, and members, joiners or recipients
    of one commitChannel or postChannel (32 B each on the wire)."""
    max_key_packages_per_upload: int = 100
    """Most KeyPackages in one uploadKeyPackages call."""
    max_key_package_stock: int = 1000
    """Most unconsumed KeyPackages a device may hold."""
    max_key_package_bytes: int = 64 * KIB
    """Largest accepted KeyPackage."""
    max_streams_per_connection: int = 128
    """Concurrent calls per QUIC connection (enforced by the RPC layer)."""
    max_subscriptions_per_device: int = 8
    """Concurrent fetchWait subscriptions per device."""
    max_connections: int = 1024
    """Open QUIC connections (handshaking or established); a new client beyond is dropped."""
    max_connections_per_address: int = 64
    """Open QUIC connections per source IP address, any port; a new one beyond is dropped."""
    max_buffered_request_bytes: int = 64 * 1024 * KIB
    """Node-wide bytes of unfinished (multi-packet) requests held at once; a stream
    beyond is refused limitExceeded (each connection may hold 2 x max_request_bytes)."""
    connection_window_bytes: int = 8 * 1024 * KIB
    """QUIC flow-control window per connection: most unread bytes a client may have
    in flight (aioquic buffers up to this per connection)."""
    handshake_timeout_s: float = 10.0
    """A connection that has not completed its handshake after this long is closed."""
    idle_timeout_s: float = 60.0
    """A connection with no packet for this long is closed (clients PING to stay)."""
    request_timeout_s: float = 30.0
    """A call whose request is not complete (FIN) after this long is refused, its buffer freed."""
    session_ttl_s: int = 7 * 24 * 3600
    """Lifetime of a session token."""
    login_ttl_s: int = 60
    """Time allowed between loginStart and loginFinish."""
    login_rate_per_s: float = 1.0
    """Sustained login/registration attempts per second, per address and per account."""
    login_burst: int = 10
    """Login/registration burst size per address and per account."""
    write_rate_per_s: float = 2000.0
    """Sustained write calls per second, per address and per account."""
    write_burst: int = 4000
    """Write burst size per address and per account."""
    purge_interval_s: float = 60.0
    """How often expired messages, sessions and login states are purged."""
    write_batch: int = 256
    """Most write operations committed together in one transaction (group commit)."""
    sqlite_synchronous: str = "FULL"
    """SQLite ``synchronous`` in WAL mode: FULL survives power loss, NORMAL only a crash."""
    metrics_host: str = "127.0.0.1"
    """Address of the Prometheus HTTP endpoint."""
    metrics_port: int = 0
    """Port of the Prometheus HTTP endpoint; 0 = metrics off."""
    log_level: str = "INFO"
    """Python logging level name."""
    loop: str = "asyncio"
    """Event loop: ``asyncio`` or ``uvloop`` (extra ``fast``); see proto.event_loop."""

    def __post_init__(self) -> None:
        positive = (
            "max_payload_bytes",
            "max_commit_bytes",
            "max_request_bytes",
            "max_queue_depth",
            "max_fetch",
            "max_fanout",
            "max_key_packages_per_upload",
            "max_key_package_stock",
            "max_key_package_bytes",
            "max_streams_per_connection",
            "max_subscriptions_per_device",
            "max_connections",
            "max_connections_per_address",
            "max_buffered_request_bytes",
            "connection_window_bytes",
            "session_ttl_s",
            "login_ttl_s",
            "retention_s",
            "login_burst",
            "write_burst",
            "write_batch",
            "pg_pool_size",
            "workers",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        for name in (
            "login_rate_per_s",
            "write_rate_per_s",
            "purge_interval_s",
            "handshake_timeout_s",
            "idle_timeout_s",
            "request_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        for name in ("port", "metrics_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ConfigError(f"{name} must be 0..65535")
        if (self.cert is None) != (self.key is None):
            raise ConfigError("cert and key must be given together")
        if self.sqlite_synchronous not in ("FULL", "NORMAL"):
            raise ConfigError("sqlite_synchronous must be FULL or NORMAL")
        if self.store and not self.store.startswith(("postgresql://", "postgres://")):
            raise ConfigError("store must be a postgresql:// DSN (or empty for SQLite)")
        if self.workers > 1 and not self.store:
            raise ConfigError("workers > 1 needs the PostgreSQL store (--store postgresql://...)")
        if not -1 <= self.worker_id < self.workers:
            raise ConfigError("worker_id must be -1 or 0..workers-1")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"unknown log level {self.log_level!r}")
        check_loop(self.loop)

    @property
    def listen(self) -> str:
        """``host:port`` as given to ``--listen``."""
        return format_hostport(self.host, self.port)


FIELDS: dict[str, dataclasses.Field[object]] = {f.name: f for f in dataclasses.fields(NodeConfig)}
_HINTS = typing.get_type_hints(NodeConfig)


def format_hostport(host: str, port: int) -> str:
    """Format an address, bracketing IPv6 literals."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_hostport(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` or ``[V6]:PORT``.

    Raises:
        ConfigError: if the text is not an address with a port 0..65535.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"bad port in {text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"port out of range in {text!r}")
    return host, port


def _convert(name: str, value: object) -> object:
    """Convert a TOML/env/flag value to the field's type."""
    hint = _HINTS[name]
    try:
        if hint is int and not isinstance(value, bool):
            return int(value)  # type: ignore[call-overload]
        if hint is float and not isinstance(value, bool):
            return float(value)  # type: ignore[arg-type]
        if hint is str:
            if not isinstance(value, str):
                raise TypeError
            return value
        if hint == Path or hint == (Path | None):
            if not isinstance(value, str | Path):
                raise TypeError
            return Path(value).expanduser()
    except (TypeError, ValueError, RuntimeError):  # RuntimeError: "~user" of no user
        raise ConfigError(f"bad value for {name}: {value!r}") from None
    raise ConfigError(f"bad value for {name}: {value!r}")


_ALIASES = {
    "retention": "retention_s",
    "session_ttl": "session_ttl_s",
    "login_ttl": "login_ttl_s",
    "login_rate": "login_rate_per_s",
    "write_rate": "write_rate_per_s",
    "purge_interval": "purge_interval_s",
    "handshake_timeout": "handshake_timeout_s",
    "idle_timeout": "idle_timeout_s",
    "request_timeout": "request_timeout_s",
}
"""Long-option spellings whose field name differs (the unit suffix)."""


def _from_mapping(values: Mapping[str, object], origin: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        name = _ALIASES.get(name, name)
        if name == "listen" and isinstance(value, str):
            out["host"], out["port"] = parse_hostport(value)
            continue
        if name not in FIELDS:
            raise ConfigError(f"{origin}: unknown setting {key!r}")
        out[name] = _convert(name, value)
    return out


def load_toml(path: Path) -> dict[str, object]:
    """Read a TOML config file (top-level keys or a ``[node]`` table)."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"bad TOML in {path}: {exc}") from None
    node_table = data.get("node", data)
    if not isinstance(node_table, dict):
        raise ConfigError(f"{path}: [node] must be a table")
    return _from_mapping(node_table, str(path))


def from_env(environ: Mapping[str, str]) -> dict[str, object]:
    """Collect ``QPC_NODE_*`` settings (``QPC_NODE_CONFIG`` is the file path, not a field)."""
    picked = {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and key != ENV_PREFIX + "CONFIG"
    }
    return _from_mapping(picked, "environment")


def build_parser() -> argparse.ArgumentParser:
    """The ``qpc-node`` argument parser; every option is documented in ``--help``."""
    p = argparse.ArgumentParser(
        prog="qpc-node",
        description=(
            "Run a quicnprotochat node. Settings come from defaults, a TOML file "
            "(--config or QPC_NODE_CONFIG; top-level keys or a [node] table, named as the "
            "long options with '_' for '-'), environment variables QPC_NODE_<NAME> "
            "(e.g. QPC_NODE_MAX_QUEUE_DEPTH) and these flags; flags win."
        ),
    )
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--listen", metavar="HOST:PORT", help="UDP address (default 127.0.0.1:7000)")
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="database, certificate and secrets (default: user data dir)",
    )
    p.add_argument(
        "--store",
        metavar="DSN",
        help="PostgreSQL store postgresql://USER@HOST/DB (default: SQLite in --data-dir)",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="node processes sharing the UDP port (SO_REUSEPORT; needs --store; default 1)",
    )
    p.add_argument(
        "--worker-id",
        type=int,
        metavar="I",
        help="set by --workers on each worker process it starts (not for direct use)",
    )
    p.add_argument("--cert", metavar="PEM", help="TLS certificate chain (default: self-signed)")
    p.add_argument("--key", metavar="PEM", help="TLS private key for --cert")
    p.add_argument(
        "--retention",
        metavar="SECONDS",
        dest="retention_s",
        type=int,
        help="delete undelivered messages after this long (default 30 days)",
    )
    limits = p.add_argument_group("limits")
    for flag, dest, text in (
        ("--max-payload-bytes", "max_payload_bytes", "largest message payload (default 262144)"),
        ("--max-request-bytes", "max_request_bytes", "largest request on the wire (default 4 MiB)"),
        (
            "--max-queue-depth",
            "max_queue_depth",
            "messages per inbox before queueFull (default 1000)",
        ),
        ("--max-fetch", "max_fetch", "envelopes per fetch response (default 500)"),
        (
            "--max-commit-bytes",
            "max_commit_bytes",
            "largest commit, Welcome and ratchet tree of commitChannel (default 2 MiB)",
        ),
        (
            "--max-fanout",
            "max_fanout",
            "devices per enqueueCommit, commitChannel or postChannel (default 5000)",
        ),
        (
            "--max-key-packages-per-upload",
            "max_key_packages_per_upload",
            "KeyPackages per upload call (default 100)",
        ),
        (
            "--max-key-package-stock",
            "max_key_package_stock",
            "unconsumed KeyPackages per device (default 1000)",
        ),
        ("--max-key-package-bytes", "max_key_package_bytes", "largest KeyPackage (default 65536)"),
        (
            "--max-streams-per-connection",
            "max_streams_per_connection",
            "concurrent calls per connection (default 128)",
        ),
        (
            "--max-subscriptions-per-device",
            "max_subscriptions_per_device",
            "concurrent fetchWait subscriptions per device (default 8)",
        ),
        (
            "--max-connections",
            "max_connections",
            "open connections; new clients beyond are dropped (default 1024)",
        ),
        (
            "--max-connections-per-address",
            "max_connections_per_address",
            "open connections per source IP (default 64)",
        ),
        (
            "--max-buffered-request-bytes",
            "max_buffered_request_bytes",
            "bytes of unfinished requests held node-wide (default 64 MiB)",
        ),
        (
            "--connection-window-bytes",
            "connection_window_bytes",
            "QUIC flow-control window per connection (default 8 MiB)",
        ),
        ("--session-ttl", "session_ttl_s", "session token lifetime in seconds (default 7 days)"),
        ("--login-ttl", "login_ttl_s", "seconds between loginStart and loginFinish (default 60)"),
        ("--login-burst", "login_burst", "login attempts burst per address/account (default 10)"),
        ("--write-burst", "write_burst", "write calls burst per address/account (default 4000)"),
        ("--write-batch", "write_batch", "writes per group-commit transaction (default 256)"),
        ("--pg-pool-size", "pg_pool_size", "PostgreSQL connections per process (default 8)"),
    ):
        limits.add_argument(flag, dest=dest, type=int, metavar="N", help=text)
    for flag, dest, text in (
        (
            "--login-rate",
            "login_rate_per_s",
            "login attempts per second per address/account (default 1)",
        ),
        (
            "--write-rate",
            "write_rate_per_s",
            "write calls per second per address/account (default 2000)",
        ),
        ("--purge-interval", "purge_interval_s", "seconds between expiry sweeps (default 60)"),
        (
            "--handshake-timeout",
            "handshake_timeout_s",
            "seconds a connection may take to finish its handshake (default 10)",
        ),
        (
            "--idle-timeout",
            "idle_timeout_s",
            "seconds without a packet before a connection is closed (default 60)",
        ),
        (
            "--request-timeout",
            "request_timeout_s",
            "seconds a call may take to send its whole request (default 30)",
        ),
    ):
        limits.add_argument(flag, dest=dest, type=float, metavar="X", help=text)
    p.add_argument(
        "--sqlite-synchronous",
        choices=("FULL", "NORMAL"),
        help="FULL (default): a returned seq survives power loss; NORMAL: only a process crash",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="Prometheus HTTP port (default 0 = off)",
    )
    p.add_argument(
        "--metrics-host", metavar="HOST", help="Prometheus HTTP address (default 127.0.0.1)"
    )
    p.add_argument(
        "--log-level",
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default INFO)",
    )
    p.add_argument(
        "--loop",
        choices=LOOPS,
        help="event loop: asyncio (default) or uvloop (needs the 'fast' extra)",
    )
    return p


def load_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> NodeConfig:
    """Build the configuration from flags, environment and TOML file (flags win).

    Raises:
        ConfigError: on an unknown setting, a bad value or an unreadable file.
    """
    env = dict(os.environ if environ is None else environ)
    args = build_parser().parse_args(argv)
    values: dict[str, object] = {}
    config_file = args.config or env.get(ENV_PREFIX + "CONFIG")
    if config_file:
        values.update(load_toml(Path(config_file).expanduser()))
    values.update(from_env(env))
    flags = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    listen = flags.pop("listen", None)
    values.update(_from_mapping(flags, "flags"))
    if listen is not None:
        values["host"], values["port"] = parse_hostport(listen)
    try:
        return NodeConfig(**values)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
