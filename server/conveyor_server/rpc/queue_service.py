"""QueueService servicer: convert, one QueueOps call, convert back."""

from __future__ import annotations

from typing import TypeAlias

import grpc

from conveyor.v1 import queue_service_pb2 as pb2
from conveyor.v1 import queue_service_pb2_grpc
from conveyor_server.core.errors import InvalidArgument
from conveyor_server.rpc import queue_codec
from conveyor_server.rpc.codec import task_to_pb
from conveyor_server.service.queue_ops import QueueOps

_Ctx: TypeAlias = grpc.aio.ServicerContext


class QueueServicer(queue_service_pb2_grpc.QueueServiceServicer):
    def __init__(self, ops: QueueOps) -> None:
        self._ops = ops

    async def ListQueues(
        self, request: pb2.ListQueuesRequest, context: _Ctx
    ) -> pb2.ListQueuesResponse:
        response = pb2.ListQueuesResponse()
        for view in self._ops.queues():
            queue_codec.fill_queue(response.queues.add(), view)
        return response

    async def GetQueue(self, request: pb2.GetQueueRequest, context: _Ctx) -> pb2.GetQueueResponse:
        response = pb2.GetQueueResponse()
        queue_codec.fill_queue(response.queue, self._ops.queue(request.name))
        return response

    async def PauseQueue(
        self, request: pb2.PauseQueueRequest, context: _Ctx
    ) -> pb2.PauseQueueResponse:
        response = pb2.PauseQueueResponse()
        queue_codec.fill_queue(response.queue, await self._ops.pause(request.name))
        return response

    async def ResumeQueue(
        self, request: pb2.ResumeQueueRequest, context: _Ctx
    ) -> pb2.ResumeQueueResponse:
        response = pb2.ResumeQueueResponse()
        queue_codec.fill_queue(response.queue, await self._ops.resume(request.name))
        return response

    async def UpdateQueue(
        self, request: pb2.UpdateQueueRequest, context: _Ctx
    ) -> pb2.UpdateQueueResponse:
        change = queue_codec.update_from_pb(request)
        response = pb2.UpdateQueueResponse()
        queue_codec.fill_queue(response.queue, await self._ops.update(request.name, change))
        return response

    async def PurgeQueue(
        self, request: pb2.PurgeQueueRequest, context: _Ctx
    ) -> pb2.PurgeQueueResponse:
        states = queue_codec.states_from_pb(request.states, "states")
        purged = await self._ops.purge(request.name, states, request.limit)
        return pb2.PurgeQueueResponse(purged_count=purged)

    async def ListTasks(
        self, request: pb2.ListTasksRequest, context: _Ctx
    ) -> pb2.ListTasksResponse:
        newest_first = queue_codec.is_newest_first(request.order)
        after = queue_codec.after_from_token(request.page_token, newest_first)
        page = self._ops.list_tasks(
            queue_codec.filter_from_pb(request.filter), after, request.page_size, newest_first
        )
        response = pb2.ListTasksResponse(
            next_page_token=queue_codec.page_token(page.next_after, newest_first)
        )
        for task in page.tasks:
            pb = task_to_pb(task)
            pb.ClearField("payload")  # not read (GetTask has it); the result data likewise
            if pb.HasField("result"):
                pb.result.ClearField("data")
            response.tasks.append(pb)
        return response

    async def RetryTasks(
        self, request: pb2.RetryTasksRequest, context: _Ctx
    ) -> pb2.RetryTasksResponse:
        has_filter = request.HasField("filter")
        if bool(request.task_ids) == has_filter:
            raise InvalidArgument("task_ids, filter: give exactly one of them")
        if request.task_ids:
            retried = await self._ops.retry_ids(list(request.task_ids))
        else:
            where = queue_codec.filter_from_pb(request.filter)
            retried = await self._ops.retry_matching(where, request.limit)
        return pb2.RetryTasksResponse(retried_count=retried)

    async def DeleteTask(
        self, request: pb2.DeleteTaskRequest, context: _Ctx
    ) -> pb2.DeleteTaskResponse:
        await self._ops.delete(request.task_id)
        return pb2.DeleteTaskResponse()

    async def ListWorkers(
        self, request: pb2.ListWorkersRequest, context: _Ctx
    ) -> pb2.ListWorkersResponse:
        response = pb2.ListWorkersResponse()
        for view in self._ops.workers():
            queue_codec.fill_worker(response.workers.add(), view)
        return response
