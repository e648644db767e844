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

The services live beside this script: ``stack_pg.py`` (PostgreSQL), ``stack_s3.py`` (SeaweedFS),
``stack_mlflow.py`` (``mlflow server``), with ``stack_common.py`` for ``stack.json`` and process helpers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# its sibling modules, found also under PYTHONSAFEPATH=1 (which the quantgate command sets for
# every Python it starts), where Python no longer puts a script's folder on the path
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack_common import DEFAULT_DIR, Config, StackError, load_config, save_config  # noqa: E402
from stack_mlflow import MlflowServer  # noqa: E402
from stack_pg import find_pg_bindir, postgres_of  # noqa: E402
from stack_s3 import Seaweed, default_weed_ports  # noqa: E402


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


def services(directory: Path, cfg: Config) -> list[tuple[str, object]]:
    """The stack's services, in start order: PostgreSQL, S3, then the mlflow server on both."""
    return [
        ("postgres", postgres_of(directory, cfg)),
        ("s3", Seaweed(directory, cfg)),
        ("mlflow", MlflowServer(directory, cfg)),
    ]


def new_config(args) -> Config:
    """A first ``up``'s configuration: the given ports, fresh credentials, which PostgreSQL runs."""
    from cryptography.fernet import Fernet

    bindir = find_pg_bindir()
    return Config(
        pg_port=args.pg_port or 15432,
        s3_port=args.s3_port or 18333,
        mlflow_port=args.mlflow_port or 5080,
        webhook_key=Fernet.generate_key().decode(),
        loopback_webhooks=not args.no_loopback_webhooks,
        pg_mode=f"system:{bindir}" if bindir else "pgserver",
        weed_ports=default_weed_ports(),
    )


def configure(directory: Path, args) -> Config:
    """The stack's configuration: ``stack.json``'s with the ports the command line moves, or a new one."""
    cfg = load_config(directory)
    if cfg is None:
        return new_config(args)
    # ports may be moved between runs; credentials and data stay
    for name in ("pg_port", "s3_port", "mlflow_port"):
        if getattr(args, name, None):
            setattr(cfg, name, getattr(args, name))
    return cfg


def write_env_file(directory: Path, cfg: Config) -> Path:
    """Write ``env.sh`` (the client's exports; owner-only, it holds credentials)."""
    env_file = directory / "env.sh"
    env_file.write_text("\n".join(env_lines(cfg, directory)) + "\n")
    env_file.chmod(0o600)
    return env_file


def up(directory: Path, args) -> Config:
    """Start every service that does not already run from ``directory``; print the exports."""
    directory.mkdir(parents=True, exist_ok=True)
    cfg = configure(directory, args)
    save_config(directory, cfg)
    for name, svc in services(directory, cfg):
        if svc.running():
            print(f"{name:9s} already running: {svc.where()}", flush=True)
            continue
        t0 = time.monotonic()
        svc.start()
        print(f"{name:9s} started in {time.monotonic() - t0:.1f}s: {svc.where()}", flush=True)
    env_file = write_env_file(directory, cfg)
    print(f"\nexport these (or: source {env_file}):")
    print("\n".join(env_lines(cfg, directory)))
    return cfg


def down(directory: Path) -> None:
    """Stop the services this stack started, in reverse order; the data stays."""
    cfg = load_config(directory)
    if cfg is None:
        print(f"no stack in {directory}")
        return
    for name, svc in reversed(services(directory, cfg)):
        print(f"{name:9s} {'stopped' if svc.stop() else 'was not running'}", flush=True)


def status(directory: Path) -> int:
    """Print each service's state; 0 when all run, 3 when one is stopped, 1 when there is no stack."""
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


def print_env(directory: Path) -> None:
    """Print the exports of an existing stack."""
    cfg = load_config(directory)
    if cfg is None:
        raise StackError(f"no stack in {directory}; run deploy/stack up first")
    print("\n".join(env_lines(cfg, directory)))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: a command (up, down, status, env), the folder and the ports."""
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
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run one command; a mistake the user can fix is one line on stderr and exit status 2."""
    args = parse_args(argv)
    directory = Path(args.dir).expanduser().resolve()
    try:
        if args.command == "up":
            up(directory, args)
        elif args.command == "down":
            down(directory)
        elif args.command == "status":
            return status(directory)
        else:
            print_env(directory)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
