"""Enqueue 10,000 tasks concurrently with AsyncClient (one channel, many in flight).

python async_producer.py [host:port]
"""

from __future__ import annotations

import asyncio
import sys
import time

from conveyor import AsyncClient


async def main(target: str = "127.0.0.1:7470") -> None:
    async with AsyncClient(target) as client:
        started = time.perf_counter()
        tasks = await asyncio.gather(
            *(
                client.enqueue("thumbnails.make", {"path": f"{i}.png"}, queue="images")
                for i in range(10_000)
            )
        )
        elapsed = time.perf_counter() - started
        print(f"{len(tasks)} enqueued in {elapsed:.2f} s ({len(tasks) / elapsed:,.0f}/s)")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
