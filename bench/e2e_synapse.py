"""Synapse side of bench/e2e.py: start a local homeserver, one sender, one /sync poller.

Synapse (``matrix-synapse`` from PyPI) runs from its own venv with SQLite,
plain HTTP on a loopback port, registration open and every rate limit lifted.
The client is a minimal HTTP/1.1 keep-alive client on asyncio streams (no
third-party HTTP library needed in the project's environment).
"""

# A benchmark driver: blocking setup calls inside async code are fine here.
# ruff: noqa: ASYNC109, ASYNC220, ASYNC221, ASYNC230, ASYNC240

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

__all__ = ["SynapseBench", "start_synapse"]

_LIFT = "{per_second: 1000000, burst_count: 1000000}"
_OVERRIDES = """
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: {work}/homeserver.db
enable_registration: true
enable_registration_without_verification: true
suppress_key_server_warning: true
trusted_key_servers: []
presence:
  enabled: false
rc_message: {lift}
rc_registration: {lift}
rc_joins:
  local: {lift}
  remote: {lift}
rc_login:
  address: {lift}
  account: {lift}
  failed_attempts: {lift}
rc_invites:
  per_room: {lift}
  per_user: {lift}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_synapse(venv: Path, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Generate a config, start Synapse, wait until it answers; returns (process, base URL)."""
    work.mkdir(parents=True, exist_ok=True)
    py = str(venv / "bin" / "python")
    cfg = work / "homeserver.yaml"
    subprocess.run(
        [
            py,
            "-m",
            "synapse.app.homeserver",
            "-H",
            "localhost",
            "-c",
            str(cfg),
            "--generate-config",
            "--report-stats=no",
            "--data-directory",
            str(work),
        ],
        check=True,
        capture_output=True,
        cwd=work,
    )
    port = _free_port()
    with cfg.open("a") as f:
        f.write(_OVERRIDES.format(port=port, work=work, lift=_LIFT))
    log = open(work / "stdout.log", "wb")  # noqa: SIM115 (lives as long as Synapse)
    proc = subprocess.Popen(
        [py, "-m", "synapse.app.homeserver", "-c", str(cfg)], stdout=log, stderr=log, cwd=work
    )
    url = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"Synapse exited ({proc.returncode}); see {work}/stdout.log")
        try:
            http = await Http.open(url)
            status, _ = await http.request("GET", "/_matrix/client/versions")
            await http.close()
            if status == 200:
                return proc, url
        except OSError:
            pass
        await asyncio.sleep(0.2)
    proc.kill()
    raise SystemExit("Synapse did not start within 120 s")


class Http:
    """One HTTP/1.1 keep-alive connection (JSON in, JSON out)."""

    def __init__(self, host: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.host = host
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, hostport: str) -> Http:
        host, port = hostport.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(hostport, reader, writer)

    async def request(
        self, method: str, path: str, body: object = None, token: str = ""
    ) -> tuple[int, Any]:
        data = b"" if body is None else json.dumps(body).encode()
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(data)}"]
        if body is not None:
            head.append("Content-Type: application/json")
        if token:
            head.append(f"Authorization: Bearer {token}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await self.writer.drain()
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while True:
            line = (await self.reader.readline()).decode().strip()
            if not line:
                break
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readline()
                    break
                chunks.append(await self.reader.readexactly(size))
                await self.reader.readline()
            raw = b"".join(chunks)
        else:
            raw = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, json.loads(raw) if raw else None

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class SynapseBench:
    """A sender (pool of 16 connections) and a receiver long-polling ``/sync``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.arrived: dict[str, float] = {}
        self.changed = asyncio.Event()
        self.room = ""
        self.sender_token = ""
        self.receiver_token = ""
        self.pool: asyncio.Queue[Http] = asyncio.Queue()
        self.txn = 0
        self.sync_task: asyncio.Task[None] | None = None

    async def _register(self, http: Http, user: str) -> str:
        status, doc = await http.request(
            "POST",
            "/_matrix/client/v3/register",
            {"username": user, "password": "bench-password-1", "auth": {"type": "m.login.dummy"}},
        )
        if status != 200:
            raise SystemExit(f"Synapse registration failed: {status} {doc}")
        return str(doc["access_token"])

    async def setup(self) -> None:
        http = await Http.open(self.url)
        self.sender_token = await self._register(http, "sender")
        self.receiver_token = await self._register(http, "receiver")
        _, doc = await http.request(
            "POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"}, self.sender_token
        )
        self.room = str(doc["room_id"])
        room = urllib.parse.quote(self.room)
        status, doc = await http.request(
            "POST", f"/_matrix/client/v3/join/{room}", {}, self.receiver_token
        )
        if status != 200:
            raise SystemExit(f"Synapse join failed: {status} {doc}")
        await http.close()
        for _ in range(16):
            self.pool.put_nowait(await Http.open(self.url))

    async def _sync_loop(self) -> None:
        http = await Http.open(self.url)
        flt = urllib.parse.quote(json.dumps({"room": {"timeline": {"limit": 1000}}}))
        _, doc = await http.request(
            "GET", f"/_matrix/client/v3/sync?timeout=0&filter={flt}", token=self.receiver_token
        )
        since = doc["next_batch"]
        while True:
            path = f"/_matrix/client/v3/sync?timeout=30000&since={since}&filter={flt}"
            _, doc = await http.request("GET", path, token=self.receiver_token)
            now = time.perf_counter()
            since = doc["next_batch"]
            room = doc.get("rooms", {}).get("join", {}).get(self.room, {})
            for ev in room.get("timeline", {}).get("events", []):
                if ev.get("type") == "m.room.message":
                    self.arrived.setdefault(ev["content"]["body"], now)
                    self.changed.set()

    async def start_sync(self) -> None:
        self.sync_task = asyncio.get_running_loop().create_task(self._sync_loop())
        await asyncio.sleep(0.5)

    async def send(self, text: str) -> None:
        http = await self.pool.get()
        try:
            self.txn += 1
            room = urllib.parse.quote(self.room)
            path = f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t{self.txn}"
            status, doc = await http.request(
                "PUT", path, {"msgtype": "m.text", "body": text}, self.sender_token
            )
            if status != 200:
                raise SystemExit(f"Synapse send failed: {status} {doc}")
        finally:
            self.pool.put_nowait(http)

    async def wait_for(self, texts: list[str], timeout: float = 300) -> float:
        deadline = time.perf_counter() + timeout
        while not all(t in self.arrived for t in texts):
            self.changed.clear()
            left = deadline - time.perf_counter()
            if left <= 0:
                raise SystemExit("Synapse receiver missed messages")
            await asyncio.wait_for(self.changed.wait(), left)
        return max(self.arrived[t] for t in texts)

    async def close(self) -> None:
        if self.sync_task is not None:
            self.sync_task.cancel()
            await asyncio.gather(self.sync_task, return_exceptions=True)
        while not self.pool.empty():
            await self.pool.get_nowait().close()
