"""The team stack's ``mlflow server``: PostgreSQL as its backend store, S3 for artifacts.

It runs with the active Python on 127.0.0.1, its pid file and log in the stack's folder. The
webhook encryption key is fixed in ``stack.json`` so webhook secrets survive restarts; as a
development stack it allows webhooks to http:// and private addresses unless told not to.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from stack_common import PG_DB, Config, StackError, pid_alive, port_free, read_pid, spawn, stop_pid, wait_for


class MlflowServer:
    """``python -m mlflow server`` on the stack's PostgreSQL and S3."""

    def __init__(self, directory: Path, cfg: Config):
        self.dir, self.cfg = directory, cfg
        self.pidfile, self.log = directory / "mlflow.pid", directory / "mlflow.log"

    def where(self) -> str:
        """Where it listens and what it is, for the status lines."""
        return (
            f"{self.cfg.tracking_uri()} (mlflow server, backend PostgreSQL db {PG_DB}, "
            f"artifacts s3://{self.cfg.bucket}/mlartifacts)"
        )

    def running(self) -> bool:
        """Whether the pid file names a live mlflow process on our port."""
        pid = read_pid(self.pidfile)
        return pid is not None and pid_alive(pid, f"--port {self.cfg.mlflow_port}") and pid_alive(pid, "mlflow")

    def healthy(self) -> bool:
        """Whether the server answers ``/health``."""
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.cfg.tracking_uri()}/health", timeout=3) as r:
                return r.status == 200
        except OSError:
            return False

    def _env(self) -> dict:
        """The server's environment: S3 credentials, the webhook key, and the development settings."""
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
        return env

    def _command(self) -> list[str]:
        """The ``mlflow server`` command line."""
        return [
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

    def start(self) -> None:
        """Start the server and wait (180 s at most) until ``/health`` answers."""
        if not port_free(self.cfg.mlflow_port):
            raise StackError(f"port {self.cfg.mlflow_port} is in use; choose another with --mlflow-port")
        proc = spawn(self._command(), self._env(), self.log, self.dir)
        self.pidfile.write_text(str(proc.pid))
        wait_for(lambda: proc.poll() is None and self.healthy(), 180, "mlflow server", self.log)

    def stop(self) -> bool:
        """Stop its process group; False when it was not running."""
        pid = read_pid(self.pidfile)
        if pid is None or not self.running():
            self.pidfile.unlink(missing_ok=True)
            return False
        stop_pid(pid, group=True)
        self.pidfile.unlink(missing_ok=True)
        return True
