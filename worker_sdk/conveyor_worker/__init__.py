"""Conveyor worker SDK: `from conveyor_worker import Worker`."""

from conveyor_worker._context import Context
from conveyor_worker._errors import Cancelled, Fatal, HandlerTimeout, Retry
from conveyor_worker._registry import Handler
from conveyor_worker._worker import Worker

__all__ = ["Cancelled", "Context", "Fatal", "Handler", "HandlerTimeout", "Retry", "Worker"]
