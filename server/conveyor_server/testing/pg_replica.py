"""A primary and a synchronous standby on loopback, for the failover check (not CI).

The primary waits for the standby's flush before a COMMIT returns
(`synchronous_standby_names`, `synchronous_commit=on`), so every transaction a broker was
told is committed is on the standby too; promoting the standby after the primary dies
must then lose nothing a broker acknowledged. How to run it: docs/scaling.md,
"Replicated set-up".
"""

from __future__ import annotations

from pathlib import Path

from conveyor_server.testing.postgres import PostgresServer

STANDBY_NAME = "standby1"


class StandbyServer(PostgresServer):
    """A streaming standby of `primary`, cloned with pg_basebackup instead of initdb."""

    def __init__(self, primary: PostgresServer, *, base_dir: Path | None = None) -> None:
        super().__init__(base_dir=base_dir)
        self.primary = primary

    def _init(self) -> None:
        self._prepare_root()
        self._run(
            str(self.bin_dir / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary.port),
            "-U",
            "postgres",
            "-D",
            str(self.data_dir),
            "-R",  # standby.signal plus primary_conninfo
            "-X",
            "stream",
        )
        # The primary knows its synchronous standby by application_name.
        conninfo = (
            f"host=127.0.0.1 port={self.primary.port} user=postgres application_name={STANDBY_NAME}"
        )
        with (self.data_dir / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"primary_conninfo = '{conninfo}'\n")
        self._initialised = True

    def promote(self) -> None:
        """Make this standby the primary (pg_ctl promote, waiting until it accepts writes)."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-w", "promote")


class ReplicatedPostgres:
    """A primary whose commits wait for one synchronous standby; `url` names both, so
    libpq connects to whichever accepts writes (target_session_attrs=read-write)."""

    def __init__(self, *, base_dir: Path | None = None) -> None:
        self.primary = PostgresServer(
            base_dir=base_dir,
            settings={
                "synchronous_standby_names": STANDBY_NAME,
                "synchronous_commit": "on",
                "wal_level": "replica",
            },
        )
        self.standby = StandbyServer(self.primary, base_dir=base_dir)

    def start(self) -> ReplicatedPostgres:
        self.primary.start()
        self.standby.start()
        return self

    def url_for(self, database: str) -> str:
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        return f"postgresql://postgres@{hosts}/{database}?target_session_attrs=read-write"

    def is_synchronous(self) -> bool:
        """Whether the primary reports the standby as its synchronous replica."""
        state = self.primary.psql(
            f"SELECT sync_state FROM pg_stat_replication WHERE application_name = '{STANDBY_NAME}'"
        )
        return state.strip() == "sync"

    def fail_over(self) -> None:
        """Kill the primary (immediate stop: no shutdown checkpoint) and promote the standby."""
        self.primary.stop(mode="immediate", remove=False)
        self.standby.promote()

    def stop(self) -> None:
        self.standby.stop()
        self.primary.stop()

    def __enter__(self) -> ReplicatedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
