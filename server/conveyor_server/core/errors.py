"""Typed core errors; rpc/errors.py maps each to one gRPC status code."""


class ConveyorError(Exception):
    """Base of every error the core raises on purpose."""


class InvalidArgument(ConveyorError):
    """The request is malformed; the message names the field."""


class NotFound(ConveyorError):
    """The named task (or schedule) does not exist, or was removed after its retention."""


class AlreadyExists(ConveyorError):
    """A duplicate the caller asked to be told about instead of getting the existing one."""


class LeaseLost(ConveyorError):
    """The lease token is not current: the lease expired, the task was re-leased or finished."""


class FailedPrecondition(ConveyorError):
    """The task is in a state that does not allow the operation (e.g. cancel a finished task)."""


class ResourceExhausted(ConveyorError):
    """A bounded resource is used up: store full, too many waiting calls."""


class StoreFull(ResourceExhausted):
    """The store reached its configured maximum size."""


class DiskFull(ResourceExhausted):
    """A commit could not write to disk (no space, a quota, a file size limit, I/O error)."""


class ShuttingDown(ConveyorError):
    """The broker is stopping and takes no new work."""


class StoreSchemaError(ConveyorError):
    """The data directory holds a store layout this version cannot open."""


class WriteConflict(ConveyorError):
    """Another broker wrote the same rows at the same moment, twice over; retrying may succeed."""


class StoreUnavailable(ConveyorError):
    """The shared store (PostgreSQL) cannot be reached; the call may be retried."""
