"""The scenarios, by the name `--scenario` takes, in the order the table shows them.

Each starts its own broker on a fresh temp dir and returns its Samples, plus (depth only)
extra figures that are not rates: restart time, RSS.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.common import RunConfig
from bench.measure import Sample
from bench.scenarios.depth import depth
from bench.scenarios.drain import drain, drain_default, drain_raw
from bench.scenarios.drain_limited import drain_limited
from bench.scenarios.enqueue import enqueue, enqueue_many, enqueue_raw
from bench.scenarios.floor import floor
from bench.scenarios.roundtrip import roundtrip
from bench.sizes import Sizes

Result = tuple[list[Sample], dict[str, float]]


def _plain(fn: Callable[[Sizes, RunConfig], list[Sample]]) -> Callable[[Sizes, RunConfig], Result]:
    return lambda sizes, config: (fn(sizes, config), {})


SCENARIOS: dict[str, Callable[[Sizes, RunConfig], Result]] = {
    "enqueue": _plain(enqueue),
    "enqueue-raw": _plain(enqueue_raw),
    "enqueue-many": _plain(enqueue_many),
    "drain": _plain(drain),
    "drain-default": _plain(drain_default),
    "drain-raw": _plain(drain_raw),
    "drain-limited": _plain(drain_limited),
    "roundtrip": _plain(roundtrip),
    "floor": _plain(floor),
    "depth": depth,
}
