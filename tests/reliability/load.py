"""Producer and worker threads over the raw stubs that write down what the broker answered.

They keep going across broker restarts (their channels reconnect quickly) until told to
stop; every call has a deadline, so no thread can hang on a dead broker.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
from google.protobuf import duration_pb2

from conveyor.v1 import (
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from tests.reliability.ledger import NOT_FOUND, Final, Ledger

QUEUE = "rel"
#: Reconnect within ~0.1 s of a restart instead of gRPC's default backoff (1 s, growing).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 200),
]
_TRANSIENT = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
)


def channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


@dataclass
class Load:
    """Producers (unary Enqueue with client-chosen ids) and workers: unary (Lease, then Ack)
    and streaming (StreamWork: credits in, tasks out, acks in, outcomes out)."""

    address: str
    ledger: Ledger
    lease_seconds: float = 2.0
    producer_pause: float = 0.004  # keeps the task count (and the read-back) modest
    name_prefix: str = ""  # task ids and worker ids start with it (several Loads, one ledger)
    producing: threading.Event = field(default_factory=threading.Event)
    working: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def start(self, producers: int, workers: int, stream_workers: int = 0) -> None:
        self.producing.set()
        self.working.set()
        for i in range(producers):
            self._spawn(self._produce, f"p{i}")
        for i in range(workers):
            self._spawn(self._work, f"w{i}")
        for i in range(stream_workers):
            self._spawn(self._stream_work, f"s{i}")

    def _spawn(self, target: object, name: str) -> None:
        name = self.name_prefix + name
        thread = threading.Thread(target=self._guard, args=(target, name), name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _guard(self, target: object, name: str) -> None:
        try:
            target(name)  # type: ignore[operator]
        except Exception as exc:  # reported by the test, which must not pass on a dead thread
            self.errors.append(f"{name}: {exc!r}")

    def stop_producers(self) -> None:
        self.producing.clear()

    def stop(self) -> None:
        self.producing.clear()
        self.working.clear()
        for thread in self.threads:
            thread.join(15)
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"load threads did not stop: {alive}"

    def _produce(self, name: str) -> None:
        stub = task_service_pb2_grpc.TaskServiceStub(channel(self.address))
        counter = 0
        while self.producing.is_set():
            task_id = f"{name}-{counter}"
            counter += 1
            spec = task_pb2.TaskSpec(
                id=task_id, queue=QUEUE, kind="job", payload=b"{}", max_attempts=1000
            )
            try:
                stub.Enqueue(task_service_pb2.EnqueueRequest(task=spec), timeout=2)
            except grpc.RpcError:
                self.ledger.enqueue_failed(task_id)
                time.sleep(0.02)  # the broker is down or restarting
                continue
            self.ledger.enqueue_ok(task_id)
            time.sleep(self.producer_pause)

    def _work(self, name: str) -> None:
        stub = worker_service_pb2_grpc.WorkerServiceStub(channel(self.address))
        pending: list[task_pb2.Task] = []  # leased, ack not yet answered
        leased_at = 0.0
        while self.working.is_set():
            if pending and time.monotonic() - leased_at > 2 * self.lease_seconds:
                pending = []  # the lease has surely run out: an ack would be rejected
            if not pending:
                request = worker_service_pb2.LeaseRequest(
                    queues=[QUEUE],
                    max_tasks=20,
                    wait=_duration(0.5),
                    lease_duration=_duration(self.lease_seconds),
                    worker_id=name,
                )
                try:
                    pending = list(stub.Lease(request, timeout=3).tasks)
                    leased_at = time.monotonic()
                except grpc.RpcError:
                    time.sleep(0.02)
                    continue
                for task in pending:
                    self.ledger.delivered(task.id, task.attempt, task.lease_token)
            if pending:
                pending = self._ack(stub, pending)

    def _ack(
        self, stub: worker_service_pb2_grpc.WorkerServiceStub, tasks: list[task_pb2.Task]
    ) -> list[task_pb2.Task]:
        """Ack each task with its token as the result; keep them if the call itself failed
        (the retry after a restart meets the durable lease, or is rejected if it ran out)."""
        items = [_ack_item(t) for t in tasks]
        try:
            response = stub.Ack(worker_service_pb2.AckRequest(acks=items), timeout=3)
        except grpc.RpcError as exc:
            if len(tasks) == 1 and exc.code() not in _TRANSIENT:
                if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    self.errors.append(f"Ack answered {exc.code().name}: {exc.details()}")
                return []  # the lone item's own outcome (lease no longer held), not an outage
            time.sleep(0.02)
            return tasks
        for task, outcome in zip(tasks, response.outcomes, strict=True):
            if outcome.code == 0:
                self.ledger.ack_ok(task.id, task.attempt, task.lease_token)
            elif outcome.code != grpc.StatusCode.FAILED_PRECONDITION.value[0]:
                self.errors.append(f"Ack item {task.id} got code {outcome.code}: {outcome.message}")
        return []

    def _stream_work(self, name: str) -> None:
        stub = worker_service_pb2_grpc.WorkerServiceStub(channel(self.address))
        while self.working.is_set():
            self._one_stream(stub, name)

    def _one_stream(self, stub: worker_service_pb2_grpc.WorkerServiceStub, name: str) -> None:
        """One StreamWork stream, ended by the broker's death or by a 5 s deadline (so the
        thread notices stop()). Acks whose outcomes never came are simply not counted."""
        outbox: queue.SimpleQueue[worker_service_pb2.StreamWorkRequest | None] = queue.SimpleQueue()
        opening = worker_service_pb2.StreamWorkRequest(
            open=worker_service_pb2.StreamWorkOpen(
                queues=[QUEUE], lease_duration=_duration(self.lease_seconds), worker_id=name
            ),
            credits=20,
        )

        def requests() -> Iterator[worker_service_pb2.StreamWorkRequest]:
            yield opening
            while (item := outbox.get()) is not None:
                yield item

        awaiting: dict[str, deque[task_pb2.Task]] = defaultdict(deque)  # acked, in order
        call = stub.StreamWork(requests(), timeout=5)
        try:
            for response in call:
                for task in response.tasks:
                    self.ledger.delivered(task.id, task.attempt, task.lease_token)
                    awaiting[task.id].append(task)
                if response.tasks:
                    acks = [_ack_item(t) for t in response.tasks]
                    outbox.put(
                        worker_service_pb2.StreamWorkRequest(acks=acks, credits=len(response.tasks))
                    )
                for outcome in response.ack_outcomes:
                    acked = awaiting[outcome.task_id].popleft()
                    if outcome.code == 0:
                        self.ledger.ack_ok(acked.id, acked.attempt, acked.lease_token)
                    elif outcome.code != grpc.StatusCode.FAILED_PRECONDITION.value[0]:
                        self.errors.append(f"stream ack {acked.id}: code {outcome.code}")
        except grpc.RpcError:
            time.sleep(0.02)  # the broker died or restarted, or the 5 s deadline passed
        finally:
            outbox.put(None)
            call.cancel()


def _ack_item(task: task_pb2.Task) -> worker_service_pb2.AckItem:
    """An ack whose result is the lease token, so a stored result names its delivery."""
    return worker_service_pb2.AckItem(
        lease=worker_service_pb2.LeaseRef(task_id=task.id, lease_token=task.lease_token),
        result=task_pb2.TaskResult(data=task.lease_token.encode()),
    )


def read_back(address: str, ids: set[str]) -> dict[str, Final]:
    """Each task's final state and result (NOT_FOUND if the broker does not know it)."""
    stub = task_service_pb2_grpc.TaskServiceStub(channel(address))
    finals: dict[str, Final] = {}
    for task_id in sorted(ids):
        try:
            task = stub.GetTask(task_service_pb2.GetTaskRequest(task_id=task_id), timeout=5).task
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            finals[task_id] = Final(NOT_FOUND)
            continue
        state = task_pb2.TaskState.Name(task.state).removeprefix("TASK_STATE_")
        finals[task_id] = Final(state, task.result.data)
    return finals
