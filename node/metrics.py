"""Prometheus metrics of one node, in a registry of its own (no module globals).

Labels never carry user data: methods, error codes and store operation names
only. Queue depth is reported as a node-wide total and as a histogram of
depths seen at enqueue, never per inbox.

Every exported sample also carries the labels ``worker`` (the worker id of
``qpc-node --workers N``, ``-`` for a single process) and ``pid``, so the
processes of one deployment stay apart even when scraped through one job.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class _ProcessLabels:
    """A collector re-exporting a registry with per-process labels on every sample."""

    def __init__(self, source: CollectorRegistry, labels: dict[str, str]) -> None:
        self._source = source
        self._labels = labels

    def collect(self) -> Iterator[Metric]:
        for metric in self._source.collect():
            out = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            out.samples = [
                Sample(s.name, {**s.labels, **self._labels}, s.value, s.timestamp, s.exemplar)
                for s in metric.samples
            ]
            yield out


class NodeMetrics:
    """All metrics of a node; see the ``help`` strings for each."""

    def __init__(self, *, worker: int = -1) -> None:
        """Args: the worker id of this process (-1: not one of ``--workers``)."""
        self.registry = CollectorRegistry(auto_describe=True)
        """Registry holding only this node's metrics (without the process labels)."""
        self.process_labels = {
            "worker": "-" if worker < 0 else str(worker),
            "pid": str(os.getpid()),
        }
        """Labels the exporter adds to every sample."""
        self.exported = CollectorRegistry(auto_describe=False)
        """What the HTTP exporter serves: :attr:`registry` with :attr:`process_labels`."""
        self.exported.register(_ProcessLabels(self.registry, self.process_labels))
        r = self.registry
        self.calls = Counter("qpc_node_calls", "RPC calls handled", ["method"], registry=r)
        self.errors = Counter(
            "qpc_node_errors", "RPC calls answered with an error", ["method", "code"], registry=r
        )
        self.call_seconds = Histogram(
            "qpc_node_call_seconds",
            "Time to handle a unary RPC call",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.store_seconds = Histogram(
            "qpc_node_store_seconds",
            "Latency of store operations (writes include waiting for group commit)",
            ["op"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.write_batch = Histogram(
            "qpc_node_store_write_batch",
            "Writes per group-commit transaction",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "qpc_node_store_commit_seconds",
            "Time of one group-commit transaction on the writer thread (incl. fsync)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queued_messages = Gauge(
            "qpc_node_queued_messages", "Messages waiting in all inboxes", registry=r
        )
        self.enqueued = Counter(
            "qpc_node_enqueued_messages", "Messages stored in inboxes", registry=r
        )
        self.subscribers = Gauge(
            "qpc_node_fetchwait_subscribers", "Open fetchWait subscriptions", registry=r
        )
        self.connections = Gauge(
            "qpc_node_connections", "Open QUIC connections (handshaking or established)", registry=r
        )
        self.connections_refused = Gauge(
            "qpc_node_connections_refused",
            "New connections dropped by max_connections/max_connections_per_address since start",
            registry=r,
        )
        self.buffered_request_bytes = Gauge(
            "qpc_node_buffered_request_bytes",
            "Bytes of unfinished requests held (max_buffered_request_bytes)",
            registry=r,
        )
        self.rate_limited = Counter(
            "qpc_node_rate_limited", "Calls refused by a rate limit", ["kind"], registry=r
        )
        self.purged = Counter(
            "qpc_node_purged", "Rows deleted by expiry sweeps", ["kind"], registry=r
        )
        # labels() costs a lock and a dict lookup per call: keep the children per label
        self._per_method: dict[str, tuple[Counter, Histogram]] = {}
        self._per_op: dict[str, Histogram] = {}
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def observe_call(self, method: str, seconds: float | None) -> None:
        """Count one call of ``method`` and record its duration (None: don't time it)."""
        children = self._per_method.get(method)
        if children is None:
            children = (self.calls.labels(method), self.call_seconds.labels(method))
            self._per_method[method] = children
        children[0].inc()
        if seconds is not None:
            children[1].observe(seconds)

    def observe_store(self, op: str, seconds: float) -> None:
        """Record one store operation's latency (the store's observer callback)."""
        child = self._per_op.get(op)
        if child is None:
            child = self._per_op[op] = self.store_seconds.labels(op)
        child.observe(seconds)

    def observe_batch(self, writes: int, seconds: float) -> None:
        """Record one group commit (the store's batch observer callback)."""
        self.write_batch.observe(writes)
        self.commit_seconds.observe(seconds)

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP exporter in a daemon thread; return the bound port."""
        server, thread = start_http_server(port, addr=host, registry=self.exported)
        self._server, self._thread = server, thread
        bound: int = server.server_address[1]
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def stop(self) -> None:
        """Stop the HTTP exporter if it runs."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
