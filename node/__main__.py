"""``qpc-node``: run a quicnprotochat node until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Sequence

from node.app import Node
from node.config import NodeConfig, load_config
from proto import files
from proto.errors import ConfigError, QpcError


class _KeyValueFormatter(logging.Formatter):
    """One line per record: ``ts=… level=… logger=… msg="…"`` (no payloads, ever)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        text = record.getMessage().replace('"', "'")
        line = f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
        line += f'logger={record.name} msg="{text}"'
        if record.exc_info:
            line += " exc=" + repr(self.formatException(record.exc_info))
        return line


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("quic").setLevel(logging.WARNING)  # aioquic's per-packet chatter


async def _serve(config: NodeConfig) -> None:
    node = await Node.start(config)
    print(f"listening: {node.address}", flush=True)
    print(f"fingerprint: {node.fingerprint}", flush=True)
    if node.metrics_port is not None:
        print(f"metrics: http://{config.metrics_host}:{node.metrics_port}/metrics", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await node.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qpc-node`` console script; returns the exit status."""
    files.set_program_umask()  # second line behind proto.files (docs/THREAT_MODEL.md)
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"qpc-node: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config.log_level)
    try:
        asyncio.run(_serve(config))
    except (QpcError, OSError) as exc:
        print(f"qpc-node: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
