"""Dataclass instances with every field set to a value other than its default.

Built from `dataclasses.fields` and the type hints, never from a hand-written
field list, so a field added to a model is covered by the parity tests at once.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

_BASE_TIME = 1_800_000_000.0


def _value_for(hint: Any, name: str, index: int) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):  # X | None: a value of X
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _value_for(inner, name, index)
    if origin is dict:
        return {f"{name}-key": f"{name}-value"}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        members = list(hint)
        return members[-1]  # never the first member, which defaults use
    if dataclasses.is_dataclass(hint):
        return non_default(hint)
    if hint is bool:
        return True
    if hint is int:
        return 3 + index
    if hint is float:
        # Times and durations alike, in whole microseconds (the wire's precision).
        return _BASE_TIME + index + 0.25 if name.endswith("_at") else 1.5 + index
    if hint is str:
        return f"{name}-{index}"
    if hint is bytes:
        return f"{name}-bytes".encode()
    raise TypeError(f"no non-default value for {name}: {hint!r}")


def non_default(cls: Any, **overrides: Any) -> Any:
    """An instance of `cls` whose every field differs from its default."""
    hints = typing.get_type_hints(cls)
    values = {}
    for index, field in enumerate(dataclasses.fields(cls)):
        if field.name in overrides:
            values[field.name] = overrides[field.name]
        else:
            values[field.name] = _value_for(hints[field.name], field.name, index)
    instance = cls(**values)
    for field in dataclasses.fields(cls):
        default = field.default
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        if default is not dataclasses.MISSING and field.name not in overrides:
            assert getattr(instance, field.name) != default, f"{cls.__name__}.{field.name}"
    return instance
