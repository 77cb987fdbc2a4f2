"""A worker app: run it with `conveyor worker tasks_app:worker` (from this directory).

Needs a broker: `conveyor serve --data-dir /tmp/conveyor-data`.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from conveyor_worker import Fatal, Retry, Worker

worker = Worker("127.0.0.1:7470", queues=["images", "default"], concurrency=8)


@worker.handler("thumbnails.make", timeout=timedelta(minutes=2))
def make_thumbnail(payload, ctx):
    """Sync handlers run on the worker's thread pool."""
    if not payload.get("path"):
        raise Fatal("payload has no path")  # straight to DEAD: retrying cannot help
    if ctx.is_cancelled:
        return None
    return {"ok": True, "thumbnail": payload["path"] + ".thumb"}


@worker.handler("reports.fetch", queue="default", non_retryable=[KeyError])
async def fetch_report(payload, ctx):
    """Async handlers run on the worker's event loop."""
    await asyncio.sleep(0.1)
    if payload.get("busy") and ctx.attempt == 1:
        raise Retry("upstream busy", after=timedelta(seconds=2))
    return {"report": payload["name"], "attempt": ctx.attempt}


if __name__ == "__main__":
    worker.run()  # SIGTERM/SIGINT stop it gracefully
