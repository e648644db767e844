"""compare: every version of a registered model side by side, and a latency-vs-F1 Pareto plot.

Reads each version's tags and the metrics of its evaluation run (``eval_run_id``). Prints a
table (variant, size, p50/p95, speedup over its parent, F1, agreement, aliases/stage) and
saves ``pareto.png`` (also logged to a ``compare`` run) so the trade-off is visible at a glance.
Figures from different hosts are not comparable: the table says when hosts differ.
"""
from __future__ import annotations

from pathlib import Path

import click
import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from evaluators.plots import pareto_png
from evaluators.report import compare_table
from flows.tracking import DEFAULT_MODEL_NAME, configure_tracking


def collect(name: str) -> list[dict]:
    client = MlflowClient()
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        raise click.ClickException(f"no versions of {name!r} in {mlflow.get_tracking_uri()}")
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(name).aliases.items():
        aliases.setdefault(str(version), []).append(f"@{alias}")
    rows = []
    for mv in sorted(versions, key=lambda v: int(v.version)):
        row = {"version": str(mv.version), "variant": mv.tags.get("variant", "?"),
               "where": " ".join(aliases.get(str(mv.version), []) + ([mv.current_stage] if mv.current_stage not in (None, "None") else []))}
        run_id = mv.tags.get("eval_run_id")
        if run_id and mv.tags.get("eval_status") == "complete":
            try:
                run = client.get_run(run_id)
                row.update(run.data.metrics)
                row["host"] = (run.data.tags.get("host.cpu"), run.data.tags.get("host.isa"), run.data.tags.get("threads"))
            except MlflowException:
                row["where"] += " (evaluation run missing)"
        else:
            row["where"] += " (not evaluated)"
        rows.append(row)
    return rows


@click.command("compare", help=__doc__)
@click.option("--name", "model_name", default=DEFAULT_MODEL_NAME, show_default=True, help="Registered model.")
@click.option("--out", "out_path", default="pareto.png", show_default=True, type=click.Path(dir_okay=False), help="Where to save the plot.")
def cli(model_name, out_path):
    configure_tracking()
    rows = collect(model_name)
    click.echo(compare_table(rows))
    hosts = {r["host"] for r in rows if "host" in r}
    if len(hosts) > 1:
        click.echo(f"\nnote: versions were measured on {len(hosts)} different hosts/thread counts: {sorted(map(str, hosts))}")
    measured = [r for r in rows if "macro_f1" in r and "latency_p50_ms" in r]
    if not measured:
        click.echo("\nno evaluated versions yet: run `quantgate evaluate --version N` first")
        return
    plot = pareto_png([{**r, "label": f"v{r['version']} {r['variant']}"} for r in measured], out_path)
    with mlflow.start_run(run_name="compare"):
        mlflow.set_tag("quantgate.step", "compare")
        mlflow.log_artifact(str(plot))
    click.echo(f"\nPareto plot: {Path(plot).resolve()} (also logged to the 'compare' run)")


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
