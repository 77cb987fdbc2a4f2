"""TaskService and WorkerService servicers: convert, make one engine call, convert back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc

from conveyor.v1 import (
    task_service_pb2,
    task_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from conveyor_server.rpc import convert
from conveyor_server.rpc.codec import fill_leased_task, task_to_pb
from conveyor_server.rpc.work_stream import WorkStream
from conveyor_server.service.engine import Engine

_Ctx: TypeAlias = grpc.aio.ServicerContext


class TaskServicer(task_service_pb2_grpc.TaskServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def Enqueue(
        self, request: task_service_pb2.EnqueueRequest, context: _Ctx
    ) -> task_service_pb2.EnqueueResponse:
        outcome = await self._engine.enqueue(
            convert.spec_from_pb(request.task), request.reject_duplicate
        )
        response = task_service_pb2.EnqueueResponse()
        convert.fill_enqueue_response(response, outcome)
        return response

    async def EnqueueBatch(
        self, request: task_service_pb2.EnqueueBatchRequest, context: _Ctx
    ) -> task_service_pb2.EnqueueBatchResponse:
        outcomes = await self._engine.enqueue_batch(
            [convert.spec_from_pb(spec) for spec in request.tasks], request.reject_duplicate
        )
        response = task_service_pb2.EnqueueBatchResponse()
        add = response.results.add
        for outcome in outcomes:
            convert.fill_enqueue_response(add(), outcome)
        return response

    async def GetTask(
        self, request: task_service_pb2.GetTaskRequest, context: _Ctx
    ) -> task_service_pb2.GetTaskResponse:
        return task_service_pb2.GetTaskResponse(
            task=task_to_pb(self._engine.get_task(request.task_id))
        )

    async def GetResult(
        self, request: task_service_pb2.GetResultRequest, context: _Ctx
    ) -> task_service_pb2.GetResultResponse:
        task = await self._engine.get_result(request.task_id, convert.wait_seconds(request))
        return task_service_pb2.GetResultResponse(
            task=task_to_pb(task), is_final=task.state.is_final
        )

    async def CancelTask(
        self, request: task_service_pb2.CancelTaskRequest, context: _Ctx
    ) -> task_service_pb2.CancelTaskResponse:
        task = await self._engine.cancel(request.task_id)
        return task_service_pb2.CancelTaskResponse(task=task_to_pb(task))


class WorkerServicer(worker_service_pb2_grpc.WorkerServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def Lease(
        self, request: worker_service_pb2.LeaseRequest, context: _Ctx
    ) -> worker_service_pb2.LeaseResponse:
        tasks = await self._engine.lease(
            convert.queues_from_pb(request.queues),
            request.max_tasks or 1,
            convert.optional_duration(request, "lease_duration"),
            request.worker_id,
            convert.queue_order_from_pb(request.queue_order),
            convert.wait_seconds(request),
        )
        response = worker_service_pb2.LeaseResponse()
        add = response.tasks.add
        for task in tasks:
            fill_leased_task(add(), task)
        return response

    async def ExtendLease(
        self, request: worker_service_pb2.ExtendLeaseRequest, context: _Ctx
    ) -> worker_service_pb2.ExtendLeaseResponse:
        outcomes = await self._engine.extend(convert.extensions_from_pb(request.leases))
        convert.raise_lone_failure(outcomes)
        response = worker_service_pb2.ExtendLeaseResponse()
        convert.fill_extend_results(response.results, outcomes)
        return response

    async def Ack(
        self, request: worker_service_pb2.AckRequest, context: _Ctx
    ) -> worker_service_pb2.AckResponse:
        outcomes = await self._engine.ack(convert.acks_from_pb(request.acks))
        convert.raise_lone_failure(outcomes)
        response = worker_service_pb2.AckResponse()
        convert.fill_item_outcomes(response.outcomes, outcomes)
        return response

    async def Fail(
        self, request: worker_service_pb2.FailRequest, context: _Ctx
    ) -> worker_service_pb2.FailResponse:
        outcomes = await self._engine.fail(convert.failures_from_pb(request.failures))
        convert.raise_lone_failure(outcomes)
        response = worker_service_pb2.FailResponse()
        convert.fill_item_outcomes(response.outcomes, outcomes)
        return response

    async def Release(
        self, request: worker_service_pb2.ReleaseRequest, context: _Ctx
    ) -> worker_service_pb2.ReleaseResponse:
        leases = [convert.lease_ref_from_pb(ref) for ref in request.leases]
        outcomes = await self._engine.release(leases)
        convert.raise_lone_failure(outcomes)
        response = worker_service_pb2.ReleaseResponse()
        convert.fill_item_outcomes(response.outcomes, outcomes)
        return response

    async def StreamWork(
        self, request_iterator: AsyncIterator[worker_service_pb2.StreamWorkRequest], context: _Ctx
    ) -> AsyncIterator[worker_service_pb2.StreamWorkResponse]:
        opening = await anext(aiter(request_iterator), None)
        if opening is None:
            return
        stream = WorkStream(self._engine, opening)
        async for response in stream.run(request_iterator):
            yield response
