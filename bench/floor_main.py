"""The round trip's floor: its RPC shape on a bare grpc.aio server, with no broker in it.

    python -m bench.floor_main serve [--data-dir DIR]   # prints `ready PORT`
    python -m bench.floor_main work --target HOST:PORT

The server has the round trip's three calls and nothing else: a unary Enqueue
that puts the request's bytes on an in-memory queue, one bidi stream that
writes each queued item to the worker and reads its acks back, and a unary
GetResult that waits for the ack of its id. Messages are raw bytes (no
protobuf), there is no validation, no task record, no timer, no waiter
bookkeeping. With `--data-dir` it also makes the two commits the broker cannot
skip on this path: one durable LMDB commit (`sync`, `metasync`, as the
broker's store opens it) when a task is enqueued and one when it is acked,
each on the event loop, as the broker commits a lone write.

Whatever the broker does beyond this costs time on top of it, so the figures
are a lower bound for the `roundtrip` scenario on the same machine (see
bench/scenarios/floor.py and docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

import grpc
import lmdb

SERVICE = "conveyor.bench.Floor"
METHODS = {name: f"/{SERVICE}/{name}" for name in ("Enqueue", "GetResult", "Work")}


def _same(data: bytes) -> bytes:
    return data


class _Commits:
    """One durable LMDB commit per call, or nothing without a data dir."""

    def __init__(self, data_dir: str | None) -> None:
        self._env = (
            lmdb.open(data_dir, map_size=1 << 30, sync=True, metasync=True, writemap=False)
            if data_dir
            else None
        )

    def put(self, key: bytes, value: bytes) -> None:
        if self._env is not None:
            with self._env.begin(write=True) as txn:
                txn.put(key, value)


async def serve(data_dir: str | None) -> None:
    commits = _Commits(data_dir)
    loop = asyncio.get_running_loop()
    queued: asyncio.Queue[bytes] = asyncio.Queue()
    finished: dict[bytes, asyncio.Future[bytes]] = {}

    def finish_of(task_id: bytes) -> asyncio.Future[bytes]:
        future = finished.get(task_id)
        if future is None:
            future = finished[task_id] = loop.create_future()
        return future

    async def enqueue(task_id: bytes, context: Any) -> bytes:
        commits.put(task_id, b"queued" + bytes(100))
        queued.put_nowait(task_id)
        return task_id

    async def get_result(task_id: bytes, context: Any) -> bytes:
        try:
            return await finish_of(task_id)
        finally:
            finished.pop(task_id, None)

    async def work(requests: Any, context: Any) -> None:
        async def read_acks() -> None:
            while (task_id := await context.read()) is not grpc.aio.EOF:
                commits.put(task_id, b"succeeded" + bytes(100))
                future = finish_of(task_id)
                if not future.done():
                    future.set_result(b"done")

        reader = asyncio.ensure_future(read_acks())
        try:
            while not reader.done():
                await context.write(await queued.get())
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    server = grpc.aio.server()
    handlers = {
        "Enqueue": grpc.unary_unary_rpc_method_handler(enqueue, _same, _same),
        "GetResult": grpc.unary_unary_rpc_method_handler(get_result, _same, _same),
        "Work": grpc.stream_stream_rpc_method_handler(work, _same, _same),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"ready {port}", flush=True)
    await server.wait_for_termination()


async def work(target: str) -> None:
    """Ack every task as it arrives: the no-op handler, without an SDK around it."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.stream_stream(METHODS["Work"], _same, _same)()
        async for task_id in call:
            await call.write(task_id)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor_main")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve")
    serve_parser.add_argument("--data-dir", help="make the two durable LMDB commits here")
    work_parser = sub.add_parser("work")
    work_parser.add_argument("--target", required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        if args.command == "serve":
            asyncio.run(serve(args.data_dir))
        else:
            asyncio.run(work(args.target))


if __name__ == "__main__":
    main()
