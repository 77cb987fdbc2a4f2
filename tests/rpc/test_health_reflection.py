"""gRPC health checking and server reflection on the broker's port."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def test_health_reports_serving(shared_broker):
    with grpc.insecure_channel(shared_broker.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "conveyor.v1.TaskService", "conveyor.v1.WorkerService"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_health_lists_every_service(shared_broker):
    with grpc.insecure_channel(shared_broker.address) as channel:
        response = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest())
    serving = health_pb2.HealthCheckResponse.SERVING
    assert {name: s.status for name, s in response.statuses.items()} == {
        "": serving,
        "conveyor.v1.TaskService": serving,
        "conveyor.v1.WorkerService": serving,
        "conveyor.v1.ScheduleService": serving,
    }


def test_reflection_lists_the_services(shared_broker):
    with grpc.insecure_channel(shared_broker.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        [response] = list(stub.ServerReflectionInfo(iter([request])))
        names = {s.name for s in response.list_services_response.service}
    assert {
        "conveyor.v1.TaskService",
        "conveyor.v1.WorkerService",
        "grpc.health.v1.Health",
    } <= names
