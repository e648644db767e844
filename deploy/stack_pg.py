"""The team stack's PostgreSQL: Debian's server binaries when present, ``pgserver`` otherwise.

``SystemPostgres`` runs a cluster in ``DIR/postgres`` on 127.0.0.1 with a generated password;
as root, ``initdb`` refuses to run, so the cluster is owned by and run as the system user
``quantgate-pg`` (created on first use). ``PgserverPostgres`` is pip's PostgreSQL 16, on a
Unix socket only. Either creates the ``mlflow`` database.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

from stack_common import PG_DB, PG_SYSTEM_USER, PG_USER, Config, StackError, pid_alive, port_free, save_config, stop_pid


def find_pg_bindir() -> Path | None:
    """Debian's server binaries (highest version), ``$QUANTGATE_PG_BINDIR``, or ``initdb`` on PATH."""
    env = os.environ.get("QUANTGATE_PG_BINDIR")
    if env:
        return Path(env) if (Path(env) / "initdb").exists() else None
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_pg_user(cmd: list[str]) -> list[str]:
    """``cmd`` run as the cluster's system user when we are root, as is otherwise."""
    return ["runuser", "-u", PG_SYSTEM_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def _ensure_system_user(directory: Path) -> None:
    """As root: create the cluster's system user, and check that it can walk down to ``directory``."""
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
            check=True,
            capture_output=True,
        )
    # the cluster's owner must be able to walk down to it
    for parent in [directory, *directory.parents]:
        if parent == directory:
            parent.chmod(parent.stat().st_mode | 0o755)
        elif not parent.stat().st_mode & 0o001:
            raise StackError(
                f"{parent} is not enterable by other users, so the PostgreSQL user {PG_SYSTEM_USER!r} "
                f"cannot reach {directory}; pick --dir elsewhere or chmod o+x {parent}"
            )


class SystemPostgres:
    """A cluster of the machine's PostgreSQL server binaries, in ``DIR/postgres``, on 127.0.0.1."""

    def __init__(self, directory: Path, cfg: Config, bindir: Path):
        self.dir, self.cfg, self.bin = directory, cfg, bindir
        self.data = directory / "postgres"

    def where(self) -> str:
        """Where it listens and what it is, for the status lines."""
        return f"127.0.0.1:{self.cfg.pg_port} (PostgreSQL {self.bin.parent.name}, {self.bin}, data {self.data})"

    def _pg_ctl(self, *args: str) -> list[str]:
        """A ``pg_ctl`` command line on this cluster, as the cluster's user."""
        return _as_pg_user([str(self.bin / "pg_ctl"), "-D", str(self.data), *args])

    def running(self) -> bool:
        """Whether ``pg_ctl status`` finds the cluster's server running."""
        if not (self.data / "PG_VERSION").exists():
            return False
        r = subprocess.run(self._pg_ctl("status"), capture_output=True, text=True)
        return r.returncode == 0

    def start(self) -> None:
        """Create the cluster on first use, start its server, and create the ``mlflow`` database."""
        _ensure_system_user(self.dir)
        if not (self.data / "PG_VERSION").exists():
            self._init_cluster()
        if not port_free(self.cfg.pg_port):
            raise StackError(f"port {self.cfg.pg_port} is in use; choose another with --pg-port")
        self._start_server()
        self._create_db(f"postgresql://{PG_USER}:{self.cfg.pg_password}@127.0.0.1:{self.cfg.pg_port}/postgres")

    def _init_cluster(self) -> None:
        """``initdb`` with the generated password (passed in a file the cluster's user alone reads)."""
        self.data.mkdir(mode=0o700, exist_ok=True)
        pwfile = self.dir / ".pgpass-init"
        pwfile.write_text(self.cfg.pg_password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.data, PG_SYSTEM_USER)
            shutil.chown(pwfile, PG_SYSTEM_USER)
        pwfile.chmod(0o600)
        initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-U", PG_USER, "--auth=scram-sha-256"]
        try:
            r = subprocess.run(
                _as_pg_user([*initdb, f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8"]),
                capture_output=True,
                text=True,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if r.returncode != 0:
            raise StackError(f"initdb failed: {' '.join(r.stderr.split())[-300:]}")

    def _start_server(self) -> None:
        """``pg_ctl start`` on 127.0.0.1 and the configured port, waiting until it accepts connections."""
        opts = f"-h 127.0.0.1 -p {self.cfg.pg_port} -k {self.data}"
        log = str(self.data / "server.log")
        r = subprocess.run(
            self._pg_ctl("-l", log, "-w", "-t", "60", "-o", opts, "start"), capture_output=True, text=True
        )
        if r.returncode != 0:
            raise StackError(
                f"PostgreSQL did not start: {' '.join((r.stdout + r.stderr).split())[-300:]} "
                f"(log {self.data / 'server.log'})"
            )

    @staticmethod
    def _create_db(admin_uri: str) -> None:
        """Create the ``mlflow`` database unless it exists."""
        import psycopg

        with psycopg.connect(admin_uri, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DB,)).fetchone():
                conn.execute(f'CREATE DATABASE "{PG_DB}"')

    def stop(self) -> bool:
        """Stop the server (``pg_ctl stop -m fast``); False when it was not running."""
        if not self.running():
            return False
        subprocess.run(self._pg_ctl("-m", "fast", "-w", "stop"), capture_output=True, check=False)
        return True


class PgserverPostgres:
    """``pgserver`` (pip) when the machine has no PostgreSQL server: a Unix socket only; the URI
    it reports is kept in ``stack.json``."""

    def __init__(self, directory: Path, cfg: Config):
        self.dir, self.cfg = directory, cfg
        self.data = directory / "pgserver"

    def where(self) -> str:
        """Where it listens and what it is, for the status lines."""
        return f"{self.cfg.pg_socket_uri or 'unix socket'} (pgserver, PostgreSQL 16, data {self.data})"

    def _postmaster_pid(self) -> int | None:
        """The server's pid from ``postmaster.pid``, or None."""
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        """Whether the pid in ``postmaster.pid`` is a live PostgreSQL."""
        pid = self._postmaster_pid()
        return pid is not None and pid_alive(pid, "postgres")

    def start(self) -> None:
        """Start pgserver's cluster (it outlives us), create the ``mlflow`` database, keep its URI."""
        try:
            import pgserver
        except ImportError:
            raise StackError(
                "no PostgreSQL server binaries found (Debian: apt-get install postgresql-15) and "
                "pgserver is not installed (pip install pgserver)"
            ) from None
        srv = pgserver.get_server(str(self.data), cleanup_mode=None)  # keeps running after we exit
        if PG_DB not in srv.psql("SELECT datname FROM pg_database;"):
            srv.psql(f'CREATE DATABASE "{PG_DB}";')
        self.cfg.pg_socket_uri = srv.get_uri(PG_DB)
        save_config(self.dir, self.cfg)

    def stop(self) -> bool:
        """Stop the server with PostgreSQL's fast shutdown; False when it was not running."""
        pid = self._postmaster_pid()
        if pid is None or not self.running():
            return False
        stop_pid(pid, group=False, sig=signal.SIGINT)  # PostgreSQL's "fast shutdown"
        return True


def postgres_of(directory: Path, cfg: Config):
    """The PostgreSQL service ``stack.json`` chose: the system's binaries or pgserver."""
    if cfg.pg_mode.startswith("system:"):
        return SystemPostgres(directory, cfg, Path(cfg.pg_mode[len("system:") :]))
    return PgserverPostgres(directory, cfg)
