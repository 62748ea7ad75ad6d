"""A running node: store + services + QUIC server + housekeeping + metrics exporter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from node.config import NodeConfig, format_hostport
from node.dispatch import NodeDispatcher
from node.metrics import NodeMetrics
from node.notify import InboxNotifier
from node.services.common import NodeContext
from node.store.base import Store
from node.store.postgres import PostgresStore
from node.store.sqlite import SqliteStore
from proto import files
from proto.errors import QpcError
from proto.rpc_server import RpcServer, ServerConfig

log = logging.getLogger(__name__)

DB_NAME = "node.db"


class Node:
    """One node. Build it with :meth:`start`; end it with :meth:`stop`."""

    def __init__(
        self,
        config: NodeConfig,
        store: Store,
        ctx: NodeContext,
        dispatcher: NodeDispatcher,
        server: RpcServer,
    ) -> None:
        """Use :meth:`start`."""
        self.config = config
        self.ctx = ctx
        self.dispatcher = dispatcher
        self._store = store
        self._server = server
        self._housekeeping: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self.metrics_port: int | None = None
        """Bound Prometheus port, when metrics are on."""

    @classmethod
    async def start(
        cls,
        config: NodeConfig,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> Node:
        """Open the store (applying migrations), load secrets, bind the socket.

        Args:
            config: the node configuration.
            wall_clock: seconds since the epoch; tests inject a fake to expire sessions.
        Raises:
            ConfigError: bad TLS or data-dir configuration.
            Unavailable: the database cannot be opened or migrated.
            OSError: the address cannot be bound.
        """
        files.private_dir(config.data_dir)
        metrics = NodeMetrics(worker=config.worker_id)
        notifier = InboxNotifier()
        store: Store
        if config.store:
            store = await PostgresStore.open(
                config.store,
                pool_size=config.pg_pool_size,
                write_batch=config.write_batch,
                observer=metrics.observe_store,
                batch_observer=metrics.observe_batch,
                wakeup=notifier.notify,
                resync=notifier.notify_all,
            )
        else:
            store = await SqliteStore.open(
                config.data_dir / DB_NAME,
                write_batch=config.write_batch,
                synchronous=config.sqlite_synchronous,
                observer=metrics.observe_store,
                batch_observer=metrics.observe_batch,
            )
        started: list[NodeDispatcher] = []
        try:
            ctx = NodeContext(
                config=config,
                store=store,
                metrics=metrics,
                notifier=notifier,
                wall_clock=wall_clock,
            )
            dispatcher = await NodeDispatcher.create(ctx)
            started.append(dispatcher)
            server = RpcServer(
                dispatcher,
                ServerConfig(
                    host=config.host,
                    port=config.port,
                    cert_file=config.cert,
                    key_file=config.key,
                    tls_dir=config.data_dir / "tls",
                    max_streams_per_connection=config.max_streams_per_connection,
                    max_request_bytes=config.max_request_bytes,
                    max_connections=config.max_connections,
                    max_connections_per_address=config.max_connections_per_address,
                    max_buffered_request_bytes=config.max_buffered_request_bytes,
                    max_data=config.connection_window_bytes,
                    handshake_timeout=config.handshake_timeout_s,
                    idle_timeout=config.idle_timeout_s,
                    request_timeout=config.request_timeout_s,
                    reuse_port=config.workers > 1,
                ),
            )
            await server.start()
        except BaseException:
            await store.close()
            for d in started:
                d.auth.close()
            raise
        node = cls(config, store, ctx, dispatcher, server)
        if config.metrics_port:
            try:
                node.metrics_port = metrics.serve(config.metrics_host, config.metrics_port)
            except OSError:
                await node.stop()
                raise
        node._housekeeping = asyncio.get_running_loop().create_task(node._housekeep())
        log.info("node started port=%d store=%s", server.port, store.backend)
        return node

    @property
    def port(self) -> int:
        """The bound UDP port."""
        return self._server.port

    @property
    def address(self) -> str:
        """``host:port`` clients connect to."""
        return format_hostport(self.config.host, self.port)

    @property
    def connection_count(self) -> int:
        """Open QUIC connections (handshaking or established)."""
        return self._server.connection_count

    @property
    def refused_connections(self) -> int:
        """New connections dropped by the connection limits since start."""
        return self._server.refused_connections

    @property
    def fingerprint(self) -> str:
        """SPKI SHA-256 (hex) of the node's TLS key, for client pinning."""
        return self._server.fingerprint

    async def _housekeep(self) -> None:
        """Expire messages, sessions and login states; refresh the queue gauge."""
        while True:
            try:
                purged = await self.dispatcher.delivery.purge()
                sessions = await self.dispatcher.auth.purge()
                self.ctx.metrics.purged.labels("messages").inc(purged)
                self.ctx.metrics.purged.labels("sessions").inc(sessions)
                self.ctx.metrics.queued_messages.set(await self._store.queued_total())
                if purged or sessions:
                    log.info("purged messages=%d sessions=%d", purged, sessions)
            except QpcError as exc:
                log.warning("housekeeping failed: %s", type(exc).__name__)
            await asyncio.sleep(self.config.purge_interval_s)

    async def purge_now(self) -> int:
        """Run the message expiry sweep once (for tests and operators); return rows deleted."""
        return await self.dispatcher.delivery.purge()

    async def stop(self) -> None:
        """Refuse new calls, finish in-flight ones, close the store. Idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("node stopping")
        await self._server.close()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        await self._store.close()
        self.dispatcher.auth.close()
        self.ctx.metrics.stop()
        log.info("node stopped")

    async def __aenter__(self) -> Node:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
