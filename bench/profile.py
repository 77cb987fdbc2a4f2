"""Summarize py-spy raw (collapsed) stacks from `conveyor bench --profile DIR`.

    python -m bench.profile DIR/roundtrip.txt [--top 15] [--rate 200]

py-spy samples only Python frames of threads that are not idle, so sampled seconds next
to the broker's /proc CPU show how much went to native threads (gRPC core's pollers).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")


def _parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def _where(frame: str) -> tuple[str, str]:
    """(function, file) of a frame like `Engine.commit (conveyor_server/service/engine.py:12)`."""
    match = _FRAME.match(frame)
    return (match["func"], match["file"]) if match else (frame, "")


def summarize(path: Path, top: int, rate: float) -> str:
    stacks = _parse(path)
    total = sum(n for _, n in stacks) or 1
    threads: Counter[str] = Counter()
    self_file: Counter[str] = Counter()
    self_func: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, n in stacks:
        thread = (
            re.sub(r"^thread \(\w+\): ", "", frames[0]) if frames[0].startswith("thread") else ""
        )
        threads[thread or "?"] += n
        func, file = _where(frames[-1])
        self_file[file] += n
        self_func[f"{func} ({file})"] += n
        seen = set()
        for frame in frames:
            func, file = _where(frame)
            if file.startswith("conveyor") and (func, file) not in seen:
                seen.add((func, file))
                inclusive[f"{func} ({file})"] += n

    def block(title: str, counter: Counter[str]) -> list[str]:
        lines = [f"  {title}"]
        for name, n in counter.most_common(top):
            lines.append(f"    {n / total:6.1%}  {name}")
        return lines

    out = [f"{path.name}: {total} samples = {total / rate:.2f} s of Python-visible CPU"]
    out += block("by thread", threads)
    out += block("self time by file", self_file)
    out += block("self time by function", self_func)
    out += block("inclusive, Conveyor functions", inclusive)
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--rate", type=float, default=200, help="py-spy's --rate")
    args = parser.parse_args()
    for path in args.files:
        print(summarize(path, args.top, args.rate), end="\n\n")


if __name__ == "__main__":
    main()
