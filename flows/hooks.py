"""`quantgate hooks`: react to registry events - new variants get evaluated and gated.

Set-up (MLflow webhooks need a SQL-backed `mlflow server`):

\b
  export QUANTGATE_WEBHOOK_SECRET=$(python -P -c "import secrets; print(secrets.token_hex(32))")
  quantgate hooks serve --port 8765 &                       # the receiver, on 127.0.0.1
  quantgate hooks register --url http://127.0.0.1:8765/     # create or update the MLflow webhook

The secret is read from an environment variable, never from the command line or logs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click
import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flows.errors import UserError
from flows.promote import lock_file_option, lock_uri_option
from quantgate.tracking import DEFAULT_MODEL_NAME, configure_tracking
from registry_hooks.gate.lock import describe_lock, resolve_lock
from registry_hooks.webhooks.events import EVENTS
from registry_hooks.webhooks.receiver import Receiver

# Per user, not per working folder ($XDG_STATE_HOME, else ~/.local/state).
DEFAULT_SEEN_DB = (
    Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "quantgate" / "hooks-seen.db"
)

DEFAULT_SECRET_ENV = "QUANTGATE_WEBHOOK_SECRET"


def _secret(env_name: str) -> str:
    secret = os.environ.get(env_name, "")
    if len(secret) < 16:
        raise UserError(f"set ${env_name} to a secret of at least 16 characters (it signs every delivery)")
    return secret


def webhook_name(model_name: str) -> str:
    return f"quantgate-{model_name}"


def register_webhook(model_name: str, url: str, secret: str):
    """Create the model's webhook, or update it in place: running this twice leaves one."""
    try:
        return _register_webhook(MlflowClient(), model_name, url, secret)
    except MlflowException as exc:  # e.g. a URL scheme the store does not allow: the store says which
        raise UserError(f"cannot register the webhook for {url!r}: {exc.message}") from None


def _register_webhook(client: MlflowClient, model_name: str, url: str, secret: str):
    name = webhook_name(model_name)
    existing, token = [], None
    while True:
        page = client.list_webhooks(page_token=token)
        existing += [w for w in page if w.name == name]
        token = page.token
        if not token:
            break
    description = f"quantgate: evaluate and gate new versions of {model_name}"
    if existing:
        hook = client.update_webhook(
            existing[0].webhook_id,
            url=url,
            events=list(EVENTS),
            secret=secret,
            description=description,
            status="ACTIVE",
        )
        for extra in existing[1:]:
            client.delete_webhook(extra.webhook_id)
        return hook, "updated"
    return client.create_webhook(
        name=name, url=url, events=list(EVENTS), secret=secret, description=description
    ), "created"


@click.group("hooks", help=__doc__)
def hooks():
    pass


@hooks.command("serve", help="Run the receiver: verify deliveries, queue jobs, evaluate and gate candidates.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind; keep loopback unless MLflow runs elsewhere.",
)
@click.option("--port", default=8765, show_default=True, type=click.IntRange(1, 65535))
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True, help="Registered model to watch.")
@click.option(
    "--secret-env",
    default=DEFAULT_SECRET_ENV,
    show_default=True,
    help="Environment variable holding the webhook secret.",
)
@click.option(
    "--thresholds",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="Thresholds file for the gate (default: the gate's).",
)
@click.option("--queue-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--max-age-s",
    default=300,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Refuse deliveries older than this (replay window).",
)
@click.option("--latency-runs", default=200, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--seen-db",
    default=str(DEFAULT_SEEN_DB),
    show_default=True,
    type=click.Path(dir_okay=False),
    help="SQLite file of accepted delivery ids: a replay is refused even after a restart. The default "
    "does not depend on the working folder, so a receiver restarted elsewhere still knows them.",
)
@lock_file_option
@lock_uri_option
def serve(
    host, port, model_name, secret_env, thresholds, queue_size, max_age_s, latency_runs, seen_db, lock_file, lock_uri
):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uri = configure_tracking(experiment=None)
    os.environ["MLFLOW_TRACKING_URI"] = uri  # the evaluate/promote subprocesses use the same store
    lock = resolve_lock(mlflow.get_registry_uri(), lock_file=lock_file, lock_uri=lock_uri)
    if lock is None:
        raise UserError(
            f"the receiver gates under the promotion lock, and registry {uri!r} has no default one: "
            "pass --lock-uri postgresql://… (QUANTGATE_LOCK_URI) or --lock-file PATH on storage every gate shares"
        )
    if lock_uri:
        os.environ["QUANTGATE_LOCK_URI"] = (
            lock_uri  # each gate it starts takes the same lock (kept off the command line)
        )
    click.echo(f"gates run under the promotion lock: {describe_lock(lock)}")
    seen_db = Path(seen_db).expanduser()
    try:
        seen_db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--seen-db {seen_db}: cannot create its folder ({exc.strerror})") from None
    receiver = Receiver(
        secret=_secret(secret_env),
        model_name=model_name,
        thresholds=thresholds,
        queue_size=queue_size,
        max_age_s=max_age_s,
        latency_runs=latency_runs,
        seen_db=str(seen_db),
        lock_file=lock_file,
    )
    click.echo(f"watching {model_name!r} on {uri}; listening on http://{host}:{port}/")
    receiver.serve(host, port)


@hooks.command("register", help="Create or update the MLflow webhook that posts to the receiver (idempotent).")
@click.option("--url", required=True, help="The receiver's URL, e.g. http://127.0.0.1:8765/")
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True)
@click.option(
    "--secret-env",
    default=DEFAULT_SECRET_ENV,
    show_default=True,
    help="Environment variable holding the webhook secret.",
)
def register(url, model_name, secret_env):
    configure_tracking(experiment=None)
    hook, what = register_webhook(model_name, url, _secret(secret_env))
    click.echo(f"{what} webhook {hook.name} ({hook.webhook_id}) -> {hook.url} for {', '.join(EVENTS)}")
