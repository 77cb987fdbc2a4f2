"""psycopg 3 (sync) vs asyncpg on the PostgreSQL store's statement shapes.

    python -m bench.pg_drivers          # a throwaway server (fsync on), ~20 s

Each: a 100-row INSERT (executemany / pipeline), a one-row SELECT round trip, and an
UPDATE ... FROM unnest of 100 rows, each its own committed transaction, one client.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

ROUNDS = 300
DDL = "CREATE TABLE t (id text PRIMARY KEY, state int, record bytea)"


def _rows(n: int, start: int) -> list[tuple[str, int, bytes]]:
    return [(f"id-{start + i:09d}", 1, b"x" * 100) for i in range(n)]


def bench_psycopg(url: str) -> dict[str, float]:
    import psycopg

    out: dict[str, float] = {}
    with psycopg.connect(url) as conn:
        conn.execute("DROP TABLE IF EXISTS t")
        conn.execute(DDL)
        conn.commit()
        started = time.perf_counter()
        for r in range(ROUNDS):
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO t VALUES (%s, %s, %s)", _rows(100, r * 100))
            conn.commit()
        out["insert 100 rows, rows/s"] = ROUNDS * 100 / (time.perf_counter() - started)
        started = time.perf_counter()
        for r in range(ROUNDS * 5):
            conn.execute("SELECT record FROM t WHERE id = %s", (f"id-{r:09d}",)).fetchone()
        out["select 1 row, round trips/s"] = ROUNDS * 5 / (time.perf_counter() - started)
        conn.commit()
        started = time.perf_counter()
        for r in range(ROUNDS):
            ids = [f"id-{r * 100 + i:09d}" for i in range(100)]
            conn.execute(
                "UPDATE t SET state = u.s FROM unnest(%s::text[], %s::int[]) AS u(i, s) "
                "WHERE t.id = u.i",
                (ids, [2] * 100),
            )
            conn.commit()
        out["update 100 via unnest, rows/s"] = ROUNDS * 100 / (time.perf_counter() - started)
    return out


async def _asyncpg(url: str) -> dict[str, float]:
    import asyncpg  # type: ignore[import-not-found,import-untyped,unused-ignore]

    out: dict[str, float] = {}
    conn: Any = await asyncpg.connect(url)
    await conn.execute("DROP TABLE IF EXISTS t")
    await conn.execute(DDL)
    started = time.perf_counter()
    for r in range(ROUNDS):
        async with conn.transaction():
            await conn.executemany("INSERT INTO t VALUES ($1, $2, $3)", _rows(100, r * 100))
    out["insert 100 rows, rows/s"] = ROUNDS * 100 / (time.perf_counter() - started)
    started = time.perf_counter()
    for r in range(ROUNDS * 5):
        await conn.fetchrow("SELECT record FROM t WHERE id = $1", f"id-{r:09d}")
    out["select 1 row, round trips/s"] = ROUNDS * 5 / (time.perf_counter() - started)
    started = time.perf_counter()
    for r in range(ROUNDS):
        ids = [f"id-{r * 100 + i:09d}" for i in range(100)]
        await conn.execute(
            "UPDATE t SET state = u.s FROM unnest($1::text[], $2::int[]) AS u(i, s) "
            "WHERE t.id = u.i",
            ids,
            [2] * 100,
        )
    out["update 100 via unnest, rows/s"] = ROUNDS * 100 / (time.perf_counter() - started)
    await conn.close()
    return out


def main() -> None:
    from conveyor_server.testing.postgres import PostgresServer

    with PostgresServer(fsync=True) as server:
        url = server.create_database("drivers")
        results = {"psycopg 3 (sync)": bench_psycopg(url)}
        results["asyncpg"] = asyncio.run(_asyncpg(url))
    for name, figures in results.items():
        print(name)
        for what, value in figures.items():
            print(f"  {what:34} {value:10,.0f}")


if __name__ == "__main__":
    main()
