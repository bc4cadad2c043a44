"""A PostgreSQL server of the campaign's own, so that it can be restarted mid-step.

The machine's shared server is never touched: ``CampaignPostgres`` runs ``initdb`` in a
temporary directory with the machine's PostgreSQL binaries (the newest under
/usr/lib/postgresql, or ``pg_config --bindir``), listens on a free loopback port, and removes
everything on ``stop``. As root (PostgreSQL refuses to run as root) it runs as the ``postgres``
system user. ``restart`` is ``pg_ctl restart -m immediate``: every backend is killed without a
checkpoint, and the server recovers from its write-ahead log as after a crash.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from tests.support import free_port


def find_bindir() -> Path:
    """The directory of initdb and pg_ctl; RuntimeError naming what to install if none."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if candidates and (candidates[-1] / "initdb").exists():
        return candidates[-1]
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                     check=True).stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl) found under "
                       "/usr/lib/postgresql/*/bin or pg_config --bindir: install the Debian "
                       "package postgresql-15 to run the fault campaign")


@dataclass(frozen=True)
class CampaignPostgres:
    """Where the server lives; plain data, so a worker process can restart it too."""

    bindir: str
    datadir: str
    port: int
    run_as: str | None  # the system user the server runs as, when we are root

    @classmethod
    def create(cls) -> CampaignPostgres:
        bindir = find_bindir()
        root = Path(tempfile.mkdtemp(prefix="billing-faults-pg-"))
        run_as = "postgres" if os.geteuid() == 0 else None
        if run_as:
            shutil.chown(root, user=run_as)
        server = cls(str(bindir), str(root / "data"), free_port(), run_as)
        server._run("initdb", "-D", server.datadir, "-U", "postgres", "--auth=trust",
                    "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
        server.start()
        return server

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> CampaignPostgres:
        return cls(**spec)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def admin_url(self) -> str:
        return self.url("postgres", user="postgres")

    def url(self, dbname: str, *, user: str = "postgres") -> str:
        return make_conninfo(host="127.0.0.1", port=self.port, user=user, dbname=dbname)

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
                   f"-c unix_socket_directories={Path(self.datadir).parent} "
                   "-c max_connections=60 -c shared_buffers=64MB")
        self._run("pg_ctl", "-D", self.datadir, "-w", "-l", self._log, "-o", options, "start")

    def restart(self) -> None:
        """Kill every backend at once (no checkpoint) and start again: a crash and recovery."""
        self._run("pg_ctl", "-D", self.datadir, "-w", "-m", "immediate", "stop")
        self.start()

    def stop(self) -> None:
        if Path(self.datadir, "postmaster.pid").exists():
            self._run("pg_ctl", "-D", self.datadir, "-w", "-m", "immediate", "stop")
        shutil.rmtree(Path(self.datadir).parent, ignore_errors=True)

    @property
    def _log(self) -> str:
        return str(Path(self.datadir).parent / "server.log")

    def _run(self, program: str, *args: str) -> None:
        command = [str(Path(self.bindir) / program), *args]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd="/")
        if done.returncode:
            raise RuntimeError(f"{program} failed ({done.returncode}): "
                               f"{done.stderr.strip() or done.stdout.strip()}")
