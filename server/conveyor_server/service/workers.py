"""WorkerRegistry: the workers this broker process has seen, kept in memory for ListWorkers.

A worker is known by the worker_id it sends (or its peer address when it sends none).
Open StreamWork streams keep it listed; a Lease caller stays listed for FORGET_AFTER
seconds after its last call. Nothing is stored: a restart starts with an empty list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from conveyor_server.core.clock import Clock

#: How long a worker that only calls Lease stays listed after its last call.
FORGET_AFTER = 300.0
#: Most workers remembered (ids are the callers' choice: bound the memory).
MAX_WORKERS = 10_000


@dataclass(slots=True)
class WorkerInfo:
    id: str
    host: str
    queues: tuple[str, ...]
    last_seen_at: float
    connected_at: float | None = None
    streams: int = 0


def host_of(peer: str) -> str:
    """The host part of a gRPC peer string ("ipv4:127.0.0.1:5000" -> "127.0.0.1")."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host = rest.rsplit(":", 1)[0]
        return host.strip("[]").replace("%5B", "").replace("%5D", "")
    return rest or peer


class WorkerRegistry:
    """Seen workers by id; cheap enough to note on every Lease call (a dict update)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._workers: dict[str, WorkerInfo] = {}

    def seen(self, worker_id: str, peer: str, queues: Sequence[str]) -> None:
        """A Lease call."""
        info = self._note(worker_id, peer, queues)
        if info is not None:
            info.last_seen_at = self._clock.now()

    def connected(self, worker_id: str, peer: str, queues: Sequence[str]) -> str:
        """A StreamWork stream opened; returns the key to pass to `disconnected`."""
        info = self._note(worker_id, peer, queues)
        now = self._clock.now()
        if info is None:
            return ""
        info.streams += 1
        info.last_seen_at = now
        if info.connected_at is None:
            info.connected_at = now
        return info.id

    def disconnected(self, key: str) -> None:
        info = self._workers.get(key)
        if info is None:
            return
        info.streams = max(info.streams - 1, 0)
        info.last_seen_at = self._clock.now()
        if info.streams == 0:
            info.connected_at = None

    def workers(self) -> list[WorkerInfo]:
        """Workers with an open stream or seen within FORGET_AFTER, by id."""
        now = self._clock.now()
        for key in [k for k, w in self._workers.items() if _is_stale(w, now)]:
            del self._workers[key]
        for info in self._workers.values():
            if info.streams:
                info.last_seen_at = now
        return [self._workers[key] for key in sorted(self._workers)]

    def _note(self, worker_id: str, peer: str, queues: Sequence[str]) -> WorkerInfo | None:
        key = worker_id or f"peer {peer}"
        info = self._workers.get(key)
        if info is None:
            if len(self._workers) >= MAX_WORKERS:
                self.workers()  # forget the stale ones first
                if len(self._workers) >= MAX_WORKERS:
                    return None
            info = WorkerInfo(key, host_of(peer), tuple(queues), self._clock.now())
            self._workers[key] = info
        elif info.queues != tuple(queues):
            info.queues = tuple(queues)
        return info


def _is_stale(info: WorkerInfo, now: float) -> bool:
    return info.streams == 0 and now - info.last_seen_at > FORGET_AFTER
