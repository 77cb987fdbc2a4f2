"""How many bytes a task takes in an answer: Lease and StreamWork hand out what fits.

The estimates are upper bounds of the protobuf encoding (rpc/codec.py), cheap
enough for the lease path: a task's payload length plus a fixed allowance for
its names, ids and times, plus its headers and last error when it has them.
"""

from __future__ import annotations

from conveyor_server.core.model import Task
from conveyor_server.core.settings import BrokerSettings

#: Ids, queue, kind, content type, worker id (each bounded by validation), the token,
#: seven times, the small numbers, and every field's tag and length.
FIXED_BYTES = 2048
#: Per header entry and for the error message: tags and lengths.
ENTRY_BYTES = 16
#: Room kept in every answer of tasks for what rides with them (a StreamWork message's
#: held outcomes: at most HELD_OUTCOMES_LIMIT of them, each well under 512 bytes).
ANSWER_RESERVE_BYTES = 4 << 20
HELD_OUTCOMES_LIMIT = 4000


def leased_task_bytes(task: Task) -> int:
    """An upper bound of the task's size in a Lease or StreamWork answer."""
    size = len(task.payload) + FIXED_BYTES
    if task.headers:
        for key, value in task.headers.items():
            size += len(key.encode()) + len(value.encode()) + ENTRY_BYTES
    error = task.last_error
    if error is not None:
        size += ENTRY_BYTES + len(error.type.encode()) + len(error.message.encode())
        size += len(error.details.encode())
    return size


def answer_budget(settings: BrokerSettings) -> int:
    """Bytes of tasks one Lease or StreamWork message may carry."""
    return settings.max_message_bytes - ANSWER_RESERVE_BYTES


def largest_task_bytes(settings: BrokerSettings) -> int:
    """An upper bound of any task's size in any answer (GetTask carries its result too)."""
    headers = settings.max_headers * (
        settings.max_name_length + settings.max_error_text + ENTRY_BYTES
    )
    error = ENTRY_BYTES + 256 + 2 * settings.max_error_text  # lease-expiry details included
    result = settings.max_payload_bytes + settings.max_name_length + ENTRY_BYTES
    return settings.max_payload_bytes + FIXED_BYTES + headers + error + result


def check_fits(settings: BrokerSettings) -> None:
    """Raises ValueError unless the largest task fits in one answer (checked at start-up)."""
    largest = largest_task_bytes(settings)
    budget = answer_budget(settings)
    if largest > budget:
        most = settings.max_payload_bytes - (largest - budget + 1) // 2
        raise ValueError(
            f"--max-payload-bytes {settings.max_payload_bytes} is too large: a task with a "
            f"payload and a result of that size and the largest headers takes up to "
            f"{largest} bytes, over the {budget} bytes one answer may carry (gRPC messages "
            f"are at most {settings.max_message_bytes} bytes); use at most {max(most, 0)}"
        )
