"""Watch events leaving the server: the feed (list, Server-Sent Events) and webhook delivery.

Both read the `watch_events` table the indexing job writes (polling: the job is another process),
so neither can slow indexing. Webhooks are delivered at least once: each (event, URL) is POSTed
until it gets a 2xx answer, with exponential backoff, and recorded in `watch_deliveries` so a
restarted server does not send it again; the Idempotency-Key header (the event_id) lets a receiver
drop the repeats a crash between the answer and the record can cause.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, AsyncIterator, Callable

from fastapi.concurrency import run_in_threadpool

from streamvl.storage.watches import WatchTables, feed_cursor

log = logging.getLogger("streamvl.service.events")
POLL_S = 0.5
HEARTBEAT_S = 15.0


def event_out(row: dict[str, Any]) -> dict[str, Any]:
    """An event row as the API shows it (EventOut)."""
    keys = ("event_id", "watch_id", "stream_id", "start", "end", "peak_score", "peak_time", "status", "opened_at", "updated_at")
    out = {k: row[k] for k in keys} | {"id": feed_cursor(row)}
    out["thumbnail_url"] = f"/api/v1/streams/{row['stream_id']}/thumbnail.jpg?t={row['peak_time']:.3f}"
    out["steps"] = row.get("steps")  # a sequence watch's: each step's clip and score
    return out


def _sse(row: dict[str, Any]) -> str:
    data = json.dumps(event_out(row), default=str)
    return f"id: {feed_cursor(row)}\nevent: watch-event\ndata: {data}\n\n"


async def sse_feed(tables: WatchTables, cursor: str | None, disconnected: Callable[[], Any],
                   poll_s: float = POLL_S) -> AsyncIterator[str]:
    """Events after `cursor` as SSE messages, then new ones as they are stored, until the client goes.
    A comment line every HEARTBEAT_S keeps proxies from closing an idle stream."""
    yield "retry: 1000\n\n"
    sent = time.monotonic()  # wall time, not poll rounds: a slow table read must not stretch the heartbeat
    while not await disconnected():
        rows = await run_in_threadpool(tables.events_after, cursor)
        for row in rows:
            yield _sse(row)
            cursor = feed_cursor(row)
        if rows:
            sent = time.monotonic()
        elif time.monotonic() - sent >= HEARTBEAT_S:
            sent = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(poll_s)


class WebhookSender:
    """A background task: POSTs each event of a watch with a webhook, at least once."""

    def __init__(self, tables: WatchTables, *, poll_s: float = POLL_S, timeout_s: float = 5.0,
                 backoff_s: float = 0.5, max_backoff_s: float = 60.0) -> None:
        self.tables, self.poll_s, self.timeout_s = tables, poll_s, timeout_s
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self._pending: dict[tuple[str, str], asyncio.Task] = {}
        self._task: asyncio.Task | None = None
        self.delivered = 0

    def start(self) -> "WebhookSender":
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def stop(self) -> None:
        tasks = [t for t in [self._task, *self._pending.values()] if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        import httpx

        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client:
            while True:
                try:
                    await self._poll(client)
                except Exception as exc:  # noqa: BLE001 (a bad read must not end delivery)
                    log.warning("webhooks: %s", exc)
                await asyncio.sleep(self.poll_s)

    async def _poll(self, client: Any) -> None:
        def due() -> list[tuple[dict, str]]:
            hooks = {r["watch_id"]: r["webhook"] for r in self.tables.watch_rows(active_only=False) if r.get("webhook")}
            if not hooks:
                return []
            done = self.tables.deliveries()
            return [(e, hooks[e["watch_id"]]) for e in self.tables.watch_events()
                    if e["watch_id"] in hooks and (e["event_id"], hooks[e["watch_id"]]) not in done]

        for event, url in await run_in_threadpool(due):
            key = (event["event_id"], url)
            if key not in self._pending:
                self._pending[key] = asyncio.get_running_loop().create_task(self._deliver(client, event, url))
        self._pending = {k: t for k, t in self._pending.items() if not t.done()}

    async def _deliver(self, client: Any, event: dict, url: str) -> None:
        body = json.dumps(event_out(event), default=str)
        headers = {"Content-Type": "application/json", "Idempotency-Key": event["event_id"],
                   "User-Agent": "streamvl-webhook/1"}
        attempt, wait = 0, self.backoff_s
        while True:
            attempt += 1
            try:
                answer = await client.post(url, content=body, headers=headers)
                if 200 <= answer.status_code < 300:
                    break
                reason = f"HTTP {answer.status_code}"
            except Exception as exc:  # noqa: BLE001 (down, refused, timed out: try again later)
                reason = type(exc).__name__
            log.info("webhook %s for event %s failed (%s), attempt %d; retrying in %.1fs", url, event["event_id"],
                     reason, attempt, wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, self.max_backoff_s)
        await run_in_threadpool(self.tables.record_delivery, event["event_id"], url, event["watch_id"], attempt)
        self.delivered += 1
