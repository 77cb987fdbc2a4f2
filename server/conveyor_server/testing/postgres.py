"""A throwaway PostgreSQL server for tests and benchmarks (Debian's binaries, pg_ctl).

`initdb -D DIR -A trust -U postgres` into a temp dir, then `pg_ctl start` on a free
loopback port with its socket in the same dir. PostgreSQL refuses to run as root (CI runs
as root): then initdb and pg_ctl run as the `postgres` user through `runuser`, with the
data dir owned by it and every parent directory traversable (mkdtemp makes 0700 dirs).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def find_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL bin dir holding initdb and pg_ctl, or None."""
    found = [
        Path(d)
        for d in glob.glob(_BIN_GLOB)
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists()
    ]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return found[-1] if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL server in a temp dir on a loopback port; `stop()` removes it.

    `fsync=False` turns fsync, synchronous_commit and full_page_writes off: fast tests
    that never test power loss (a process kill loses nothing committed either way).
    """

    def __init__(
        self,
        *,
        fsync: bool = True,
        base_dir: Path | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise RuntimeError(
                f"no PostgreSQL binaries in {_BIN_GLOB} (apt-get install postgresql)"
            )
        self.bin_dir = bin_dir
        self.fsync = fsync
        #: More `-c name=value` server settings (testing/pg_replica.py sets replication).
        self.settings = dict(settings or {})
        self.port = _free_port()
        self._as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="conveyor-pg-", dir=base_dir))
        self.data_dir = self.root / "data"
        self._started = False
        self._initialised = False

    @property
    def url(self) -> str:
        """The `postgres` database's URL (TCP on loopback)."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(
            command, check=check, capture_output=True, text=True, timeout=120, cwd=self.root
        )

    def _init(self) -> None:
        self._prepare_root()
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self._initialised = True

    def _prepare_root(self) -> None:
        """As root: hand the temp dir to the postgres user and make its parents traversable."""
        if self._as_root:
            path = self.root
            while path != path.parent:  # parents traversable by the postgres user
                mode = path.stat().st_mode
                if not mode & 0o001:
                    path.chmod(mode | 0o001)
                path = path.parent
            shutil.chown(self.root, "postgres", "postgres")

    def start(self) -> PostgresServer:
        if not self._initialised:
            self._init()
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        options += " -c max_connections=200"
        if not self.fsync:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        for name, value in self.settings.items():
            options += f" -c {name}={value}"
        result = self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {result.stderr.strip()}\n{self.log()}")
        self._started = True
        return self

    def stop(self, *, mode: str = "fast", remove: bool = True) -> None:
        """Stop the server (mode: smart, fast, immediate); `remove` deletes its dir."""
        if self._started:
            self._run(
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-m",
                mode,
                "-w",
                "stop",
                check=False,
            )
            self._started = False
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def restart(self, *, mode: str = "fast") -> None:
        """Stop and start again on the same port and data (for PostgreSQL-restart tests)."""
        self.stop(mode=mode, remove=False)
        self.start()

    def log(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = self._run(
            str(self.bin_dir / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-c",
            sql,
        )
        return result.stdout

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """CREATE DATABASE name (from `template` if given); returns its URL."""
        clause = f' TEMPLATE "{template}"' if template else ""
        self.psql(f'CREATE DATABASE "{name}"{clause}')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
