"""Schedule records as stored: a version byte, then a marshal'd tuple of the schedule's fields.

The store owns this format (it is not the API's protobuf message), so a change
to the API cannot change what is on disk. The tuple follows the field order of
`Schedule` and `TaskTemplate` (derived from `dataclasses.fields`, never written
out by hand). Fields may be *added at the end* of either dataclass with a
default: older records decode with that default. Reordering or removing a field
needs a new RECORD_VERSION and a decoder for the old one.
"""

from __future__ import annotations

import marshal
from dataclasses import fields
from typing import Any

from conveyor_server.core.model import RetryPolicy
from conveyor_server.core.schedules.model import (
    MisfirePolicy,
    OverlapPolicy,
    Schedule,
    ScheduleSource,
    TaskTemplate,
)

RECORD_VERSION = 1
_PREFIX = bytes([RECORD_VERSION])
_SCHEDULE_FIELDS = tuple(f.name for f in fields(Schedule))
_TEMPLATE_FIELDS = tuple(f.name for f in fields(TaskTemplate))
_RETRY_FIELDS = tuple(f.name for f in fields(RetryPolicy))
_ENUMS: dict[str, type[Any]] = {
    "misfire_policy": MisfirePolicy,
    "overlap_policy": OverlapPolicy,
    "source": ScheduleSource,
}


def _template_tuple(template: TaskTemplate) -> tuple[Any, ...]:
    values = []
    for name in _TEMPLATE_FIELDS:
        value = getattr(template, name)
        if name == "retry_policy" and value is not None:
            value = tuple(getattr(value, n) for n in _RETRY_FIELDS)
        values.append(value)
    return tuple(values)


def encode(schedule: Schedule) -> bytes:
    values = []
    for name in _SCHEDULE_FIELDS:
        value = getattr(schedule, name)
        if name == "template":
            value = _template_tuple(value)
        elif name in _ENUMS:
            value = int(value)
        values.append(value)
    return _PREFIX + marshal.dumps(tuple(values), 4)


def decode(data: bytes) -> Schedule:
    if data[:1] != _PREFIX:
        raise ValueError(f"unknown schedule record version {data[:1]!r}")
    stored = dict(zip(_SCHEDULE_FIELDS, marshal.loads(data[1:]), strict=False))
    template = dict(zip(_TEMPLATE_FIELDS, stored.pop("template"), strict=False))
    if template.get("retry_policy") is not None:
        template["retry_policy"] = RetryPolicy(*template["retry_policy"])
    for name, kind in _ENUMS.items():
        if name in stored:
            stored[name] = kind(stored[name])
    return Schedule(template=TaskTemplate(**template), **stored)
