"""Where runs and models live, and small registry look-ups shared by every step."""

from __future__ import annotations

import hashlib
import os

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from quantgate.errors import UserError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_MODEL_NAME = "news-classifier"
AFTER_MODEL = "<registered model name>"  # the default experiment: one per registered model


def read_sqlite_text_leniently() -> None:
    """Text columns of a sqlite store are read as text whatever raw SQL stored in them: bytes
    that are not UTF-8 with U+FFFD in their place, not raised, and a BLOB as the text it decodes
    to, not ``bytes``. The forty-eighth adversarial run set one tag of a version of its own to
    such bytes (terminal escapes first): Python's sqlite3 raised on it, so every query listing
    the model's versions failed, and the key holder's ``promote``, ``compare`` and ``serve``
    crashed or refused for all of them. The fiftieth stored a description and a ``variant`` tag
    as BLOBs, and ``promote`` crashed on ``bytes`` after the alias move, reporting nothing.

    How: connections are opened with ``detect_types=PARSE_DECLTYPES`` and a converter for the
    ``VARCHAR`` and ``TEXT`` columns (sqlite3 hands it the raw bytes of either storage class);
    sqlite3's default ``DATE``/``TIMESTAMP`` converters are dropped, since SQLAlchemy parses
    those columns itself. Holds for every connection opened afterwards."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    for declared in ("DATE", "TIMESTAMP"):
        sqlite3.converters.pop(declared, None)
    for declared in ("VARCHAR", "TEXT"):
        sqlite3.register_converter(declared, _as_text)
    if not event.contains(Engine, "do_connect", _lenient_sqlite_connect):
        event.listen(Engine, "do_connect", _lenient_sqlite_connect)
    if not event.contains(Engine, "connect", _lenient_sqlite_text):
        event.listen(Engine, "connect", _lenient_sqlite_text)


def _as_text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _lenient_sqlite_connect(dialect, _record, _cargs, cparams) -> None:
    if dialect.name == "sqlite":
        import sqlite3

        cparams["detect_types"] = cparams.get("detect_types", 0) | sqlite3.PARSE_DECLTYPES


def _lenient_sqlite_text(dbapi_connection, _record) -> None:
    import sqlite3

    if isinstance(dbapi_connection, sqlite3.Connection):  # columns no converter covers (expressions)
        dbapi_connection.text_factory = _as_text


def is_version_number(number: object) -> bool:
    """Whether ``number`` is a version number MLflow writes (decimal digits). Raw SQL can store
    text there (the forty-seventh and forty-ninth adversarial runs): such a row is no version."""
    text = str(number)
    return text.isascii() and text.isdecimal()


def version_order(number: object) -> tuple:
    """Sort key for version numbers: by number; text a writer stored there sorts last."""
    text = str(number)
    return (0, int(text), "") if is_version_number(text) else (1, 0, text)


def readable_model(client: MlflowClient, name: str):
    """The registered model ``name`` as MLflow reads it back (``None``: there is none), or a
    ``UserError`` when the registry cannot: a row a writer garbled by raw SQL (a version number
    made text, the forty-seventh and forty-ninth adversarial runs) breaks MLflow's own reading of
    the model, its tag writes included, so nothing about it can be decided or recorded."""
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        from quantgate.printable import shown

        raise UserError(
            f"the registry cannot read registered model {name!r} back ({shown(str(exc.message))[:160]}); "
            "a row of it in the tracking database needs repair"
        ) from None


def experiment_name(model_name: str = DEFAULT_MODEL_NAME, experiment: str | None = AFTER_MODEL) -> str:
    """The experiment every step logs to: ``experiment`` when the user chose one (``--experiment``
    or ``$MLFLOW_EXPERIMENT_NAME``), else the registered model's name."""
    if experiment and experiment != AFTER_MODEL:
        return experiment
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or model_name


def configure_tracking(experiment: str | None = AFTER_MODEL, *, model_name: str = DEFAULT_MODEL_NAME) -> str:
    """Use ``$MLFLOW_TRACKING_URI`` when set, else the SQL store ``sqlite:///mlflow.db`` in the
    working directory (registry and webhooks need a database-backed store), and select the
    experiment named after the registered model (``experiment=None``: select none).

    Inside ``mlflow run`` (``$MLFLOW_RUN_ID``) the run, and so its experiment, exists already:
    ``mlflow run`` picks the experiment named after the model through the default-experiment
    provider in ``flows.experiment_provider``. ``$MLFLOW_EXPERIMENT_ID`` is MLflow's own choice
    and is kept as well."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(DEFAULT_TRACKING_URI)
    if experiment and not os.environ.get("MLFLOW_RUN_ID") and not os.environ.get("MLFLOW_EXPERIMENT_ID"):
        mlflow.set_experiment(experiment_name(model_name, experiment))
    return mlflow.get_tracking_uri()


def absolute_tracking_uri(uri: str) -> str:
    """``uri`` with a relative sqlite file or file-store path made absolute, so that a command
    printed for another folder still names this store."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + os.path.abspath(uri[len("sqlite:///") :])
    if "://" not in uri and not uri.startswith("file:"):
        return os.path.abspath(uri)
    return uri


def filter_string(value: str, what: str = "model name") -> str:
    """``value`` as a string literal for MLflow's search filters, quoted so that one with an
    apostrophe (MLflow accepts a model named ``o'brien``) still parses; one with both quote kinds
    cannot be written in a filter at all, which is one line (``UserError``) rather than MLflow's
    traceback."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise UserError(f"{what} {value!r} holds both ' and \"; MLflow's search filters cannot express it: rename it")


def name_filter(name: str) -> str:
    """``name=<name>`` for MLflow's search filters (:func:`filter_string`)."""
    return f"name={filter_string(name)}"


def all_versions(client, filter_text: str, page_size: int = 10_000) -> list:
    """Every model version matching ``filter_text``, page by page: one call returns at most
    10,000, and a writer who registers more would hide the rest from whoever reads one page
    (``--candidates``, the Staging read-back, ``latest-fp32``)."""
    found, token = [], None
    while True:
        page = client.search_model_versions(filter_text, max_results=page_size, page_token=token)
        found += list(page)
        token = page.token
        if not token:
            return found


def parse_model_ref(ref: str, default_name: str = DEFAULT_MODEL_NAME) -> str:
    """Accept ``models:/name/3``, ``models:/name@staging``, ``name/3``, ``@staging`` or just
    ``3`` (the last two in ``default_name``); return a ``models:/`` URI."""
    ref = str(ref).strip()
    if ref.startswith("models:/"):
        return ref
    if ref.isdigit() or (ref.startswith("@") and len(ref) > 1):
        return f"models:/{default_name}{'/' if ref.isdigit() else ''}{ref}"
    if "/" in ref or "@" in ref:
        return f"models:/{ref}"
    raise UserError(
        f"cannot read {ref!r} as a model version: give a version number, 'name/3', 'name@alias' or a models:/ URI"
    )


def resolve_version(ref: str, default_name: str = DEFAULT_MODEL_NAME) -> ModelVersion:
    """The registry entry behind a version reference (alias or number)."""
    uri = parse_model_ref(ref, default_name)
    body = uri[len("models:/") :]
    client = MlflowClient()
    if "@" in body:
        name, alias = body.split("@", 1)
        what, fetch = f"alias @{alias} of model {name!r}", lambda: client.get_model_version_by_alias(name, alias)
    else:
        name, _, version = body.rpartition("/")
        if not name or not version.isdigit():
            raise UserError(f"{uri!r} is not models:/<name>/<version> or models:/<name>@<alias>")
        what, fetch = f"version {version} of model {name!r}", lambda: client.get_model_version(name, version)
    try:
        return fetch()
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise UserError(f"no {what} in {mlflow.get_tracking_uri()}") from None
        raise


def version_uri(mv: ModelVersion) -> str:
    return f"models:/{mv.name}/{mv.version}"


def logged_model_id(mv: ModelVersion) -> str | None:
    """The MLflow 3 LoggedModel behind a version (``m-…``): where the UI shows per-model metrics.
    MLflow 3.17 leaves ``ModelVersion.model_id`` empty for versions registered by
    ``log_model(registered_model_name=...)``; their ``source`` is ``models:/m-…`` instead."""
    if getattr(mv, "model_id", None):
        return mv.model_id
    source = mv.source or ""
    return source[len("models:/") :] if source.startswith("models:/m-") else None


def log_params_once(params: dict) -> dict:
    """Log params into the active run, skipping keys it already holds: `mlflow run` logs the
    entry point's parameters first, in its own string form (``''`` for an empty string,
    ``false`` for a bool), and MLflow refuses to change a logged value."""
    import mlflow

    held = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    new = {k: v for k, v in params.items() if k not in held}
    if new:
        mlflow.log_params(new)
    return new


def version_identity(mv: ModelVersion) -> str:
    """What names this registered version whatever its model is called: a digest of the
    attributes MLflow never lets anyone change (its source, creation time and number). The
    ``model_uri`` param names the model as it was called then, and a rename there and back hid
    an evaluation made in between (the fifteenth adversarial run); an evaluation's signature
    binds it, so a version registered again from the same source, or a copy, under the old name
    and number does not inherit one (the sixteenth)."""
    fields = f"{mv.source}\0{mv.creation_timestamp}\0{mv.version}"
    return hashlib.sha256(fields.encode("utf-8")).hexdigest()[:32]
