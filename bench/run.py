"""`conveyor bench` / `python -m bench`: run the scenarios against fresh brokers and print
Markdown tables of the medians over `--repeat` runs (paste-ready for docs/performance.md)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import RunConfig
from bench.measure import Sample
from bench.scenarios import SCENARIOS, _timing
from bench.sizes import SIZES, sizes_for
from bench.table import depth_table, main_table, summarize


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help="run only this scenario (repeatable); default: all",
    )
    parser.add_argument("--size", choices=list(SIZES), default="default", help="preset counts")
    parser.add_argument(
        "--count",
        type=int,
        help="override the preset: single enqueues (enqueue-many, drain, roundtrip scale)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs; the median is reported")
    parser.add_argument("--durability", choices=["sync", "nosync"], default="sync")
    parser.add_argument(
        "--store",
        choices=["lmdb", "postgres"],
        default="lmdb",
        help="lmdb (default: a temp data dir) or postgres: a throwaway PostgreSQL with fsync "
        "on, a fresh database per run (needs Debian's postgresql)",
    )
    parser.add_argument(
        "--brokers",
        type=int,
        default=1,
        metavar="N",
        help="brokers on one database, clients and workers spread over them (postgres only)",
    )
    parser.add_argument("--enqueue-concurrency", type=int, default=128, metavar="N")
    parser.add_argument(
        "--drain-concurrency", type=int, default=512, metavar="N", help="best measured: 512"
    )
    parser.add_argument(
        "--drain-prefetch",
        type=int,
        default=512,
        metavar="N",
        help="the worker's prefetch (default 512: the broker leases the next tasks while "
        "the worker runs these; 0 makes the two take turns)",
    )
    parser.add_argument("--drain-handler", choices=["sync", "async"], default="async")
    parser.add_argument("--drain-processes", type=int, default=1, metavar="N")
    parser.add_argument(
        "--drain-transport", choices=["auto", "stream", "unary"], help="default: the SDK's"
    )
    parser.add_argument(
        "--limit-keys",
        type=int,
        default=1000,
        metavar="N",
        help="drain-limited: concurrency keys the tasks are spread over",
    )
    parser.add_argument(
        "--limit-concurrency",
        type=int,
        default=1024,
        metavar="N",
        help="drain-limited: the queue's concurrency limit (default: the worker's 512 slots "
        "plus 512 prefetch; below that the drain is bound by the limit itself)",
    )
    parser.add_argument(
        "--limit-key-concurrency",
        type=int,
        default=0,
        metavar="N",
        help="drain-limited: most LEASED tasks per key (0: none)",
    )
    parser.add_argument(
        "--broker-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="pass a flag to every broker (repeatable; e.g. --broker-arg=--metrics-listen=)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy the broker during each timed window of the first run (raw stacks in DIR)",
    )


def _run_scenario(
    name: str, args: Any, config: RunConfig
) -> tuple[list[list[Sample]], dict[str, float]]:
    sizes = sizes_for(args.size, args.count)
    runs: list[list[Sample]] = []
    extras: list[dict[str, float]] = []
    for i in range(args.repeat):
        _timing.PROFILE_DIR = args.profile if i == 0 else None
        samples, extra = SCENARIOS[name](sizes, config)
        runs.append(samples)
        extras.append(extra)
    _timing.PROFILE_DIR = None
    merged = {key: statistics.median(e[key] for e in extras) for key in extras[0]}
    return runs, merged


def run(args: Any) -> int:
    config = RunConfig(
        durability=args.durability,
        enqueue_concurrency=args.enqueue_concurrency,
        drain_concurrency=args.drain_concurrency,
        drain_prefetch=args.drain_prefetch,
        drain_handler=args.drain_handler,
        drain_processes=args.drain_processes,
        drain_transport=args.drain_transport,
        broker_args=tuple(args.broker_arg),
        store=args.store,
        brokers=args.brokers,
        limit_keys=args.limit_keys,
        limit_concurrency=args.limit_concurrency,
        limit_key_concurrency=args.limit_key_concurrency,
    )
    if args.profile and _timing.py_spy_path() is None:
        print("conveyor bench: --profile needs py-spy (pip install py-spy)", file=sys.stderr)
        return 2
    problem = _store_problem(args)
    if problem:
        print(f"conveyor bench: {problem}", file=sys.stderr)
        return 2
    started = time.monotonic()
    rows: list[dict[str, object]] = []
    extras: dict[str, float] = {}
    failed: list[str] = []
    default = [n for n in SCENARIOS if args.store == "lmdb" or n not in LMDB_ONLY]
    for name in args.scenario or default:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            runs, extra = _run_scenario(name, args, config)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        rows += summarize(runs)
        extras.update(extra)
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\nConveyor bench: size={args.size}, durability={args.durability}, "
        f"store={args.store}{_brokers_note(args)}, median of "
        f"{args.repeat} run(s); {os.cpu_count()} CPUs, load {load} at the end; "
        f"commit {_commit()}; {time.monotonic() - started:.0f} s\n"
    )
    print(main_table(rows))
    if extras:
        print()
        print(depth_table(rows, extras))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "depth": extras}, indent=2))
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


#: Scenarios about the embedded store alone (its depth, restart, RSS; the LMDB floor).
LMDB_ONLY = ("depth", "floor")


def _store_problem(args: Any) -> str:
    """Why the store flags cannot run as given ("" if they can)."""
    if args.brokers < 1:
        return "--brokers must be at least 1"
    if args.store == "lmdb" and args.brokers > 1:
        return "--brokers > 1 needs --store postgres (an LMDB data dir has one broker)"
    if args.store == "postgres":
        picked = [n for n in args.scenario or () if n in LMDB_ONLY]
        if picked:
            return f"--scenario {picked[0]} measures LMDB only; drop it or use --store lmdb"
        from conveyor_server.testing.postgres import find_bin_dir

        if find_bin_dir() is None:
            return "--store postgres needs PostgreSQL (apt-get install postgresql)"
    return ""


def _brokers_note(args: Any) -> str:
    if args.store != "postgres":
        return ""
    from conveyor_server.testing.postgres import find_bin_dir

    bin_dir = find_bin_dir()
    version = bin_dir.parent.name if bin_dir else "?"
    return f" (PostgreSQL {version}, fsync on), brokers={args.brokers}"


def _commit() -> str:
    """The code measured, so a table can be matched to a commit (dirty: uncommitted edits).
    CONVEYOR_BENCH_COMMIT names it when the code runs from an exported snapshot."""
    if os.environ.get("CONVEYOR_BENCH_COMMIT"):
        return os.environ["CONVEYOR_BENCH_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="conveyor bench", description=__doc__)
    add_arguments(parser)
    sys.exit(run(parser.parse_args(argv)))


def add_command(subparsers: Any) -> None:
    """`conveyor bench` (entry point conveyor.commands): registered by this package."""
    parser = subparsers.add_parser("bench", help="measure throughput against a fresh local broker")
    add_arguments(parser)
    parser.set_defaults(run=run)
