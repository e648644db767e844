"""`mlflow run` on this project logs to the experiment named after the registered model.

MLflow creates the run of an ``mlflow run`` step before the step's code starts, in the
experiment given by ``--experiment-name``/``--experiment-id`` or ``$MLFLOW_EXPERIMENT_NAME``/
``_ID``; when none is given it asks the default-experiment providers registered under the
entry-point group ``mlflow.default_experiment_provider`` and, without one, uses ``Default``.
This provider answers only for ``mlflow run <this project's folder>``: the experiment named
after the step's ``-P model_name=...`` (default ``news-classifier``), created when missing, so
that ``mlflow run`` steps, ``main``'s children and the ``quantgate`` CLI share one experiment.

Kept light on imports: MLflow loads every registered provider when it is imported.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROJECT_NAME = "quantgate"


def _mlflow_run_args(argv: list[str]) -> list[str] | None:
    """The arguments after ``run`` when this process is the ``mlflow run`` command."""
    if len(argv) < 2 or argv[1] != "run":
        return None
    prog = Path(argv[0])
    if prog.name == "mlflow" or (prog.name == "__main__.py" and prog.parent.name == "mlflow"):
        return argv[2:]
    return None


def _is_this_project(uri: str) -> bool:
    """A local folder whose MLproject names this project."""
    path = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
    mlproject = path / "MLproject"
    if not mlproject.is_file():
        return False
    import yaml  # a dependency of mlflow itself

    try:
        return (yaml.safe_load(mlproject.read_text(encoding="utf-8")) or {}).get("name") == PROJECT_NAME
    except (OSError, yaml.YAMLError):
        return False


def project_model_name(argv: list[str]) -> str | None:
    """The registered model an ``mlflow run`` of this project works on (its ``-P model_name``,
    else the default); ``None`` when ``argv`` is not ``mlflow run`` on this project."""
    args = _mlflow_run_args(argv)
    if args is None:
        return None
    from mlflow.cli import run as run_command

    try:
        ctx = run_command.make_context("run", list(args), resilient_parsing=True)
    except Exception:  # not a command line mlflow itself would accept; let it say why
        return None
    uri = ctx.params.get("uri")
    if not uri or not _is_this_project(uri):
        return None
    from quantgate.tracking import DEFAULT_MODEL_NAME

    for item in ctx.params.get("param_list") or ():
        key, sep, value = item.partition("=")
        if sep and key.strip() == "model_name" and value.strip():
            return value.strip()
    return DEFAULT_MODEL_NAME


def get_or_create_experiment(name: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


try:
    from mlflow.tracking.default_experiment.abstract_context import DefaultExperimentProvider
except ImportError:  # pragma: no cover - an MLflow without providers never loads this module
    DefaultExperimentProvider = object


class ProjectExperimentProvider(DefaultExperimentProvider):
    """Registered under ``mlflow.default_experiment_provider`` in pyproject.toml."""

    def in_context(self) -> bool:
        return project_model_name(sys.argv) is not None

    def get_experiment_id(self) -> str:
        from quantgate.tracking import experiment_name

        return get_or_create_experiment(experiment_name(project_model_name(sys.argv)))
