"""What every service of the team stack (deploy/stack.py) shares: the names it creates, its
configuration (``stack.json`` in the stack's folder) and small process helpers (ports, pid
files, starting and stopping a detached service).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

PG_USER = "quantgate"  # the database role
PG_DB = "mlflow"
PG_SYSTEM_USER = "quantgate-pg"  # the OS user that owns the cluster when we are root
BUCKET = "quantgate"
DEFAULT_DIR = ".quantgate-stack"


class StackError(RuntimeError):
    """Something the user can fix (a port in use, a folder others cannot enter); one line."""


# ---------------------------------------------------------------- configuration (pure)
@dataclass
class Config:
    """Ports, generated credentials and which PostgreSQL runs: what ``stack.json`` keeps."""

    pg_port: int = 15432
    s3_port: int = 18333
    mlflow_port: int = 5080
    mlflow_workers: int = 2
    bucket: str = BUCKET
    pg_password: str = field(default_factory=lambda: secrets.token_hex(16))
    s3_access_key: str = field(default_factory=lambda: "qg" + secrets.token_hex(8))
    s3_secret_key: str = field(default_factory=lambda: secrets.token_hex(20))
    webhook_key: str = ""  # Fernet key; fixed so webhook secrets survive restarts
    loopback_webhooks: bool = True  # development settings: http and private addresses allowed
    pg_mode: str = ""  # "system:<bindir>" or "pgserver"
    pg_socket_uri: str = ""  # pgserver's URI (Unix socket), once started
    weed_ports: dict = field(default_factory=dict)

    def pg_uri(self, directory: Path) -> str:
        """The PostgreSQL URI of the ``mlflow`` database (mlflow's backend store, the gate's lock)."""
        if self.pg_mode == "pgserver":  # Unix socket only; the URI pgserver reported
            return self.pg_socket_uri
        return f"postgresql://{PG_USER}:{self.pg_password}@127.0.0.1:{self.pg_port}/{PG_DB}"

    def s3_endpoint(self) -> str:
        """The S3 endpoint URL."""
        return f"http://127.0.0.1:{self.s3_port}"

    def tracking_uri(self) -> str:
        """The mlflow server's URL."""
        return f"http://127.0.0.1:{self.mlflow_port}"


def load_config(directory: Path) -> Config | None:
    """The stack's configuration, or None when ``directory`` holds no stack."""
    path = directory / "stack.json"
    if not path.exists():
        return None
    return Config(**json.loads(path.read_text(encoding="utf-8")))


def save_config(directory: Path, cfg: Config) -> None:
    """Write ``stack.json``, readable by its owner only (it holds credentials)."""
    path = directory / "stack.json"
    path.write_text(json.dumps(asdict(cfg), indent=1), encoding="utf-8")
    path.chmod(0o600)  # credentials


# ---------------------------------------------------------------- small process helpers
def port_free(port: int) -> bool:
    """Whether ``port`` on 127.0.0.1 can be bound now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
    """A port on 127.0.0.1 the system says is free."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int, marker: str) -> bool:
    """A live process whose command line mentions ``marker`` (our folder): a recycled pid is not ours."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker in cmdline


def read_pid(path: Path) -> int | None:
    """The pid in a pid file, or None when there is none."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def wait_for(check, timeout_s: float, what: str, log: Path | None = None) -> None:
    """Poll ``check`` until it is true; past ``timeout_s``, fail with the tail of ``log``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tail = ""
    if log and log.exists():
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
    raise StackError(f"{what} did not come up within {timeout_s:g}s{f' (log {log}: {tail})' if log else ''}")


def spawn(cmd: list[str], env: dict, log: Path, cwd: Path) -> subprocess.Popen:
    """Start ``cmd`` detached (its own session, no stdin), appending its output to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd,
        )


def stop_pid(pid: int, *, group: bool, timeout_s: float = 20.0, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to a process (or its group), and SIGKILL it if it is still there after ``timeout_s``."""
    kill = os.killpg if group else os.kill
    try:
        kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
