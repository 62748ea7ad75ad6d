"""A scriptable NodeHandler for transport tests (answers the golden samples)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from typing import Any

from proto import codec as c
from proto.errors import RateLimited
from proto.rpc import CallContext
from tests.proto import samples

REQUEST_VAR: contextvars.ContextVar[str | None] = contextvars.ContextVar("request", default=None)


class FakeHandler:
    """Answers every call with its sample result; ``ping`` payloads script behaviour.

    ``b"boom"`` raises a plain exception, ``b"rate"`` raises RateLimited,
    ``b"block"`` waits until cancelled (recorded in :attr:`cancelled`).
    """

    def __init__(self) -> None:
        self.contexts: list[CallContext] = []
        self.block_started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.sub_started = asyncio.Event()
        self.sub_cancelled = asyncio.Event()
        self.subscribers: list[asyncio.Queue[c.Envelope]] = []

    def push(self, env: c.Envelope) -> None:
        """Deliver ``env`` to every open fetchWait subscription."""
        for q in self.subscribers:
            q.put_nowait(env)

    async def _sample(self, ctx: CallContext, params: Any) -> Any:
        self.contexts.append(ctx)
        return samples.RESULTS[ctx.method]

    async def ping(self, ctx: CallContext, params: c.PingParams) -> c.PingResult:
        if params.payload == b"boom":
            raise ValueError("secret internal detail")
        if params.payload == b"rate":
            raise RateLimited("slow down", retry_after_ms=250)
        if params.payload == b"block":
            self.block_started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if params.payload == b"rate-later":
            await asyncio.sleep(0)
            raise RateLimited("later", retry_after_ms=1)
        if params.payload == b"boom-later":
            await asyncio.sleep(0)
            raise ValueError("secret later detail")
        if params.payload == b"ctxvar":
            assert REQUEST_VAR.get() is None  # nothing leaks in from earlier calls
            REQUEST_VAR.set("set-before-await")
            await asyncio.sleep(0)
            return c.PingResult(payload=str(REQUEST_VAR.get()).encode(), server_time_ms=1)
        if params.payload == b"wrong-type":
            return c.HealthResult(status="", version="", uptime_ms=0, store_backend="")  # type: ignore[return-value]
        return c.PingResult(payload=params.payload, server_time_ms=1)

    async def fetch_wait(
        self, ctx: CallContext, params: c.FetchWaitParams
    ) -> AsyncIterator[c.FetchWaitResult]:
        q: asyncio.Queue[c.Envelope] = asyncio.Queue()
        self.subscribers.append(q)
        self.sub_started.set()
        try:
            yield c.FetchWaitResult(envelopes=(samples.ENV,))
            timeout = params.timeout_ms / 1000 if params.timeout_ms else None
            while True:
                try:
                    env = await asyncio.wait_for(q.get(), timeout)
                except TimeoutError:
                    yield c.FetchWaitResult(envelopes=())
                    return
                yield c.FetchWaitResult(envelopes=(env,))
        except (asyncio.CancelledError, GeneratorExit):
            self.sub_cancelled.set()
            raise
        finally:
            self.subscribers.remove(q)

    health = whoami = register_start = register_finish = login_start = _sample
    login_finish = logout = register_device = upload_key_packages = _sample
    fetch_key_package = key_package_count = list_devices = fetch_hybrid_key = _sample
    enqueue = enqueue_commit = fetch = ack = _sample
    post_channel = commit_channel = set_channel_key = fetch_welcome = _sample
    unlink_device = _sample
