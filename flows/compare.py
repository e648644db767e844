"""compare: every version of a registered model side by side, and a latency-vs-F1 Pareto plot.

Reads each version's tags and the metrics of its evaluation run (``eval_run_id``). Prints a
table (variant, size, p50/p95, speedup over its parent, F1, agreement, aliases/stage) and
saves ``pareto.png`` (also logged to a ``compare`` run): latency against F1 with the Pareto
frontier, and each variant's speed-up over its parent with its interval as error bars. Ends
with the URL of the MLflow UI's comparison of the listed versions (their source runs carry
the evaluation's metrics). Figures from different hosts are not comparable: the table says
when hosts differ. With an evidence key, figures and aliases the key does not vouch for are
marked, and such figures are left out of the plot.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from urllib.parse import quote

import click
import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from evaluators.plots import pareto_png
from evaluators.report import compare_table
from quantgate.artifact_log import log_file
from quantgate.errors import UserError
from quantgate.evidence_signing import load_key, mlflow_ui_command
from quantgate.tracking import (
    DEFAULT_MODEL_NAME,
    all_versions,
    configure_tracking,
    name_filter,
    readable_model,
    version_order,
)
from registry_hooks.gate.evidence import freshness_problems, run_problems
from registry_hooks.gate.provenance import run_superseded
from registry_hooks.gate.verdict import recorded_pass

UNVERIFIED = "unverified"  # a row whose figures the evidence key does not vouch for
ROW_FIELDS = frozenset({"version", "variant", "run_id", "where", "host", UNVERIFIED})  # not figures


def collect(name: str, key: bytes | None = None) -> list[dict]:
    """One row per version. With an evidence key, figures from an evaluation the key does not
    vouch for are marked (and kept out of the plot), and so is an alias on a version without a
    pass the gate signed: any store writer can point ``eval_run_id`` or an alias anywhere."""
    client = MlflowClient()
    versions = all_versions(client, name_filter(name))
    if not versions:
        raise UserError(f"no versions of {name!r} in {mlflow.get_tracking_uri()}")
    aliases: dict[str, list[str]] = {}
    model = readable_model(client, name)
    for alias, version in (model.aliases if model else {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for mv in sorted(versions, key=lambda mv: version_order(mv.version)):
        held = [
            f"@{alias}"
            + ("" if recorded_pass(mv.tags, alias, None, name=name, version=str(mv.version), key=key) else " (no pass)")
            if key
            else f"@{alias}"
            for alias in aliases.get(str(mv.version), [])
        ]
        row = {
            "version": str(mv.version),
            "variant": mv.tags.get("variant", "?"),
            "run_id": mv.run_id,
            "where": " ".join(held + ([mv.current_stage] if mv.current_stage not in (None, "None") else [])),
        }
        run_id = mv.tags.get("eval_run_id")
        if run_id and mv.tags.get("eval_status") == "complete":
            try:
                run = client.get_run(run_id)
                # a metric is a figure, never one of the row's own fields: the forty-sixth adversarial
                # run logged a metric `where` (compare crashed) and one `version` (it relabelled a row)
                row.update({k: v for k, v in run.data.metrics.items() if k not in ROW_FIELDS})
                row["host"] = (
                    run.data.tags.get("host.cpu"),
                    run.data.tags.get("host.isa"),
                    run.data.tags.get("threads"),
                )
                if key is not None and not_vouched(client, mv, run, key):
                    row[UNVERIFIED] = True
                    row["where"] += " (figures not vouched for by the key)"
            except MlflowException:
                row["where"] += " (evaluation run missing)"
        else:
            row["where"] += " (not evaluated)"
        rows.append(row)
    return rows


def not_vouched(client: MlflowClient, mv, run, key: bytes) -> list[str]:
    """Why the key does not vouch for the figures ``run`` holds now, as the gate would judge them:
    its signature, figures re-logged since (the fortieth adversarial run re-logged a p95 of 0.42 ms
    on a signed run, and compare plotted it as vouched for), a newer evaluation, or the version's
    files changed since they were measured (the forty-first run swapped a signed version's graph
    for one answering a single label, and compare still plotted its figures as vouched for): the
    files are downloaded and hashed, as the gate does."""
    return (
        run_problems(
            str(mv.version), mv.tags, run.info.status, run.data.tags, run.info.lifecycle_stage, run.data.metrics
        )
        or run_superseded(client, mv, run, key)
        or freshness_problems(mv)[0]
    )


def ui_base_url(tracking_uri: str, ui_url: str | None) -> str:
    """The UI to point at: ``--ui-url``, else the tracking server itself, else a local ``mlflow ui``."""
    if ui_url:
        return ui_url.rstrip("/")
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else LOCAL_UI


def compare_url(base: str, name: str, versions_to_runs: dict[str, str]) -> str:
    """The MLflow UI's side-by-side comparison of model versions (the page the registry's
    "Compare" button opens): ``#/compare-model-versions?name="<model>"&runs={"<version>": "<run id>"}``."""
    runs = json.dumps({str(v): r for v, r in versions_to_runs.items()}, separators=(",", ":"))
    return f"{base}/#/compare-model-versions?name={quote(json.dumps(name))}&runs={quote(runs)}"


LOCAL_UI = "http://127.0.0.1:5000"
PLOT_FORMATS = (".png", ".svg", ".pdf")  # what --out may end with (matplotlib picks the format by it)


@click.command("compare", help=__doc__)
@click.option("--name", "model_name", default=DEFAULT_MODEL_NAME, show_default=True, help="Registered model.")
@click.option(
    "--out",
    "out_path",
    default="pareto.png",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Where to save the plot.",
)
@click.option(
    "--ui-url",
    default=None,
    help=f"Base URL of the MLflow UI for the printed link [default: the tracking server, else {LOCAL_UI}].",
)
def cli(model_name, out_path, ui_url):
    key = load_key()
    out = Path(out_path)
    if out.suffix.lower() not in PLOT_FORMATS:
        raise click.BadParameter(f"{out_path!r}: the plot is saved as {', '.join(PLOT_FORMATS)}", param_hint="--out")
    if not out.absolute().parent.is_dir():
        raise click.BadParameter(f"{out_path!r}: folder {str(out.parent)!r} does not exist", param_hint="--out")
    tracking_uri = configure_tracking(experiment=None, model_name=model_name)  # no experiment made for a typo
    rows = collect(model_name, key)
    click.echo(compare_table(rows))
    base = ui_base_url(tracking_uri, ui_url)
    listed = {r["version"]: r["run_id"] for r in rows if r.get("run_id")}
    click.echo(f"\nCompare these versions in the MLflow UI: {compare_url(base, model_name, listed)}")
    if base == LOCAL_UI and not ui_url:
        click.echo(f"  (start it with: {mlflow_ui_command(tracking_uri)})")
    hosts = {r["host"] for r in rows if "host" in r}
    if len(hosts) > 1:
        click.echo(
            f"\nnote: versions were measured on {len(hosts)} different hosts/thread counts: {sorted(map(str, hosts))}"
        )
    unverified = [f"v{r['version']}" for r in rows if r.get(UNVERIFIED)]
    if unverified:
        click.echo(
            f"\nnote: the evidence key does not vouch for the figures of {', '.join(unverified)} "
            "(left out of the plot; `quantgate promote --dry-run` says why)"
        )
    measured = [r for r in rows if "macro_f1" in r and "latency_p50_ms" in r and not r.get(UNVERIFIED)]
    if not measured:
        click.echo("\nno evaluated versions yet: run `quantgate evaluate --version N` first")
        return
    # drawn in a private folder and logged from there: the working folder may be writable by others,
    # and a link planted at --out was written through (onto the evidence key file) and uploaded
    # (a link to /proc/self/environ put the key in the store: the nineteenth adversarial run)
    with tempfile.TemporaryDirectory(prefix="quantgate-compare-") as tmp:
        plot = pareto_png(
            [{**r, "label": f"v{r['version']} {r['variant']}"} for r in measured], str(Path(tmp) / out.name)
        )
        configure_tracking(model_name=model_name)  # the plot's run goes where the steps' runs go
        with mlflow.start_run(run_name="compare") as run:
            mlflow.set_tag("quantgate.step", "compare")
            log_file(run.info.run_id, plot)
        publish(Path(plot), out)
    click.echo(f"\nPareto plot: {out.absolute()} (also logged to the 'compare' run)")


def publish(made: Path, out: Path) -> None:
    """Put ``made`` at ``out`` by a new file and a rename in ``out``'s folder: whatever is at
    ``out`` (a link included) is replaced, never written through."""
    fd, tmp = tempfile.mkstemp(dir=out.absolute().parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(made.read_bytes())
            # on the open file, never by name: the forty-seventh adversarial run swapped the
            # temporary name for a link to the key file, and a chmod by name made the key 644
            os.fchmod(f.fileno(), 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
