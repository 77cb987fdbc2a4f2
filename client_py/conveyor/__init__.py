"""Conveyor Python client: `from conveyor import Client, AsyncClient`."""

from conveyor import errors
from conveyor._aio import AsyncClient
from conveyor._client import Client
from conveyor._model import (
    ExtendOutcome,
    Failure,
    ItemOutcome,
    LeaseRef,
    RetryPolicy,
    Task,
    TaskError,
    TaskOptions,
    TaskSpec,
    TaskState,
)
from conveyor._queues import QueueInfo, QueueLimits, TaskPage, WorkerInfo
from conveyor._schedules import MisfirePolicy, OverlapPolicy, Schedule
from conveyor._stream import StreamBatch, WorkStream
from conveyor.errors import (
    ConveyorError,
    LeaseLost,
    ResultTimeout,
    TaskCancelled,
    TaskExpired,
    TaskFailed,
)
from conveyor.serializer import JsonSerializer, Serializer
from conveyor.task import TaskFunction, set_default_client, task

__all__ = [
    "AsyncClient",
    "Client",
    "ConveyorError",
    "ExtendOutcome",
    "Failure",
    "ItemOutcome",
    "JsonSerializer",
    "LeaseLost",
    "LeaseRef",
    "MisfirePolicy",
    "OverlapPolicy",
    "QueueInfo",
    "QueueLimits",
    "ResultTimeout",
    "RetryPolicy",
    "Schedule",
    "Serializer",
    "StreamBatch",
    "Task",
    "TaskCancelled",
    "TaskError",
    "TaskExpired",
    "TaskFailed",
    "TaskFunction",
    "TaskOptions",
    "TaskPage",
    "TaskSpec",
    "TaskState",
    "WorkStream",
    "WorkerInfo",
    "errors",
    "set_default_client",
    "task",
]
