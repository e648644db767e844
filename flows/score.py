"""score: batch-score texts with a registered version on Spark.

Reads Parquet or CSV (paths, globs, folders or s3:// objects) with a text column, scores every
row with ``mlflow.pyfunc.spark_udf(spark, <the version's verified files>, env_manager="local")``
and writes the input columns plus ``row`` (the row's position in the input), ``label``,
``probability`` and ``model_version`` (``name/N``: the version that scored it).

* The version is resolved once (``@staging`` by default), so an alias moved mid-job cannot mix
  versions; it is checked as ``quantgate serve`` checks it (an alias holder needs its own gate
  pass; every file must match the registry's ``model_sha256``; with an evidence key, no code but
  quantgate's own), its files are downloaded once, checked against ``manifest_sha256`` too, and
  those same files go to the executors, which never see the key. A model that does not verify
  is refused before Spark starts.
* Batches are deterministic: rows are numbered in input order and each model call gets rows
  ``[k*B, (k+1)*B)`` (``--batch-size`` B), exactly what ``pyfunc.predict`` gets on the same
  rows in chunks of B. Dynamic INT8 computes activation scales per batch, so this is what
  makes Spark's output identical to the plain pyfunc's at the same batch size.
* Output appears whole or not at all (see ``quantgate/score_io.py``).
* ``--master local[*]`` by default; any master URL works, and under ``spark-submit`` the
  master it was given is used.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import click

from flows.errors import UserError
from quantgate.evidence_signing import forget_key
from quantgate.score_io import FORMATS, OutputPlan, discard, download_inputs, infer_format, plan_output, publish
from quantgate.tracking import DEFAULT_MODEL_NAME, configure_tracking, parse_model_ref, resolve_version

DEFAULT_BATCH = 64  # the pyfunc's own internal batch (NewsClassifier.predict_proba)
RESULT_TYPE = "label string, probability double"
# Columns the output adds (and the step's own working columns): an input that has one is refused,
# not overwritten or left to fail inside Spark after the whole input was scored.
OUTPUT_COLUMNS = ("row", "label", "probability", "model_version", "_batch", "_pred", "_pid", "_mid")


def keyed_output_check(plan: OutputPlan) -> None:
    """With an evidence key, a local output is staged, marked and renamed in its folder, by names:
    that folder must be one no store writer can write (not the store's, nobody else's, not group
    or other-writable; a sticky folder like /tmp lets no one rename another's files). The
    forty-seventh adversarial run, writing the store's folder, swapped the staging folder for a
    link while Spark ran: the output went to the writer, the marker into the key holder's private
    folder, and a later ``--overwrite`` deleted a person's file the marker then listed."""
    from quantgate.evidence_signing import key_store_folders, load_key
    from quantgate.file_trust import replace_problem

    if plan.s3 or load_key() is None:
        return
    problem = replace_problem(plan.local_target.parent, key_store_folders(os.environ))
    if problem:
        raise UserError(
            f"with an evidence key, score writes a local output only in a folder no store writer can write, "
            f"and {problem}: choose another --output (or an s3:// one)"
        )


class ModelRefused(UserError):
    """The version's files do not match what was registered (and evaluated)."""


# ---------------------------------------------------------------- verification (one place)
def verify_model_files(local: Path, mv) -> str:
    """Refuse a downloaded version whose files differ from its ``manifest_sha256`` tag.

    Every pyfunc artifact except ``meta`` (which holds the per-file manifest) is hashed and
    the manifest's digest compared with the tag set at registration; ``meta.json``'s own
    manifest is checked again when the pyfunc loads. Returns the digest.
    """
    from quantgate.model_files import ModelIntegrityError, pyfunc_artifacts
    from quantgate.packaging import manifest, manifest_digest
    from registry_hooks.gate.evidence import changed_files

    expected = (mv.tags or {}).get("manifest_sha256")
    if not expected:
        raise ModelRefused(
            f"version {mv.version} of {mv.name!r} has no manifest_sha256 tag: "
            "its files were never fingerprinted, so they cannot be verified"
        )
    try:
        artifacts = pyfunc_artifacts(local)
    except ModelIntegrityError as exc:
        raise ModelRefused(f"refusing version {mv.version} of {mv.name!r}: {exc}") from None
    if "meta" not in artifacts:
        raise ModelRefused(f"version {mv.version} of {mv.name!r} is not a quantgate model (no meta artifact)")
    actual = manifest({k: str(local / path) for k, path in artifacts.items() if k != "meta"})
    digest = manifest_digest(actual)
    if digest != expected:
        import json

        recorded = json.loads((local / artifacts["meta"]).read_text(encoding="utf-8")).get("manifest", {})
        changed = changed_files(actual, recorded)
        raise ModelRefused(
            f"refusing version {mv.version} of {mv.name!r}: its files' SHA-256 manifest {digest[:16]}… "
            f"differs from the registered {expected[:16]}…"
            + (f" (changed: {', '.join(changed[:5])})" if changed else "")
        )
    return digest


def fetch_verified_model(model_uri: str, into: Path):
    """``(version, local copy)``: the checks ``quantgate serve`` makes (an alias holder's own gate
    pass, every file against ``model_sha256``, with a key no foreign code), then the per-artifact
    manifest against ``manifest_sha256``."""
    from flows.serve import verified_version

    mv, local = verified_version(model_uri, into, verb="score")
    verify_model_files(local, mv)
    return mv, local


# ---------------------------------------------------------------- Spark
def spark_session(master: str | None, *, batch_size: int, threads: int, partitions: int | None):
    """A session whose Python workers use this interpreter, 127.0.0.1, and B-row Arrow batches."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    worker_env = {
        "QUANTGATE_MAX_BATCH": str(max(batch_size, 256)),
        "QUANTGATE_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        # workers import installed code only, never a package a store writer planted in the
        # working folder (the thirty-fourth adversarial run's pyspark/ there ran in every worker)
        "PYTHONSAFEPATH": "1",
    }
    os.environ.update(worker_env)  # local mode: workers inherit the driver's environment
    import pyspark
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    # the installed Spark, unless the user names one: pyspark looks in the working folder's parent
    # first, and runs the bin/spark-submit it finds there (the thirty-ninth adversarial run noted
    # that a key holder scoring from a folder inside the store would run a store writer's)
    os.environ.setdefault("SPARK_HOME", str(Path(pyspark.__file__).resolve().parent))

    builder = SparkSession.builder.appName("quantgate-score")
    if master or not SparkConf().contains("spark.master"):  # spark-submit sets spark.master
        builder = builder.master(master or "local[*]")
    builder = (
        builder.config("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.ui.enabled", "false")
    )
    if (master or "local").startswith("local"):
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    for key, value in worker_env.items():
        builder = builder.config(f"spark.executorEnv.{key}", value)
    if partitions:
        builder = builder.config("spark.sql.shuffle.partitions", str(partitions))
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # PySpark's errors for a bad --master (JAVA_GATEWAY_EXITED, …) have no common base
        raise UserError(f"cannot start Spark (--master {master or 'local[*]'}): {str(exc).splitlines()[0]}") from None
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def read_frame(spark, paths: list[str], fmt: str):
    reader = spark.read
    if fmt == "csv":
        reader = reader.option("header", "true").option("escape", '"').option("multiLine", "true")
    return reader.format(fmt).load(paths)


def numbered_batches(df, batch_size: int, partitions: int):
    """Number rows 0..n-1 in input order (no Python round trip: per-partition counts, then
    offsets), put whole batches of ``batch_size`` consecutive rows in each partition, in order.
    Returns (frame, row count)."""
    from pyspark.sql import functions as F

    df = df.withColumn("_pid", F.spark_partition_id()).withColumn("_mid", F.monotonically_increasing_id())
    counts = dict(df.groupBy("_pid").count().collect())
    offsets, total = {}, 0
    for pid in sorted(counts):
        offsets[pid], total = total, total + counts[pid]
    if total == 0:
        raise UserError("the input has no rows")
    offset_map = F.create_map(*[x for pid, off in offsets.items() for x in (F.lit(pid), F.lit(off))])
    row = (offset_map[F.col("_pid")] + F.col("_mid") - F.shiftleft(F.col("_pid").cast("long"), 33)).cast("long")
    df = df.withColumn("row", row).drop("_pid", "_mid").withColumn("_batch", F.floor(F.col("row") / batch_size))
    n_batches = -(-total // batch_size)
    df = df.repartitionByRange(max(1, min(partitions, n_batches)), "_batch").sortWithinPartitions("row")
    return df, total


class Progress:
    """Prints the running stage's finished/total tasks every few seconds (stderr)."""

    def __init__(self, sc, every_s: float = 5.0):
        self.sc, self.every_s, self._stop = sc, every_s, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        tracker, t0 = self.sc.statusTracker(), time.monotonic()
        while not self._stop.wait(self.every_s):
            for sid in tracker.getActiveStageIds():
                info = tracker.getStageInfo(sid)
                if info:
                    click.echo(
                        f"[score] {time.monotonic() - t0:5.0f}s stage {sid}: "
                        f"{info.numCompletedTasks}/{info.numTasks} tasks done",
                        err=True,
                    )

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()


def spark_error_line(exc: BaseException) -> str:
    """The Python error inside a Spark failure (its last 'SomethingError: message' line)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error: " in ln or "Exception: " in ln:
            return ln[:300]
    return lines[-1][:300] if lines else type(exc).__name__


# ---------------------------------------------------------------- the step
def check_sizes(batch_size: int, threads: int, partitions: int | None) -> None:
    """Refuse a non-positive ``--batch-size``, ``--threads`` or ``--partitions``."""
    if batch_size < 1 or threads < 1 or (partitions is not None and partitions < 1):
        raise UserError("--batch-size, --threads and --partitions must be positive")


def load_numbered_input(spark, paths: list[str], fmt: str, text_column: str, batch_size: int, partitions: int):
    """The input frame with its rows numbered and batched (:func:`numbered_batches`), refused
    when it has no ``text_column`` or a column the output adds. Returns (frame, row count)."""
    df = read_frame(spark, paths, fmt)
    if text_column not in df.columns:
        raise UserError(f"the input has no column {text_column!r}; it has {df.columns[:10]} (use --text-column)")
    taken = [c for c in df.columns if c in OUTPUT_COLUMNS]
    if taken:
        raise UserError(
            f"the input already has column(s) {taken}, which the output adds (row, label, probability, "
            "model_version): rename or drop them first"
        )
    return numbered_batches(df, batch_size, partitions)


def with_predictions(spark, df, local_model: Path, text_column: str, mv):
    """The output frame: ``row``, the input columns, then ``label``, ``probability`` and
    ``model_version``, scored by the pyfunc UDF over the verified files."""
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    udf = mlflow.pyfunc.spark_udf(spark, str(local_model), env_manager="local", result_type=RESULT_TYPE)
    pred = udf(F.col(text_column).alias("text"))
    front = ["row"] + [c for c in df.columns if c not in ("row", "_batch")]
    return df.withColumn("_pred", pred).select(
        *front,
        F.col("_pred.label").alias("label"),
        F.col("_pred.probability").alias("probability"),
        F.lit(f"{mv.name}/{mv.version}").alias("model_version"),
    )


def write_staged(spark, result, plan: OutputPlan) -> float:
    """Score and write ``result`` to the plan's staging place, reporting progress; the seconds it took.
    A failure inside Spark is raised as its Python error line (``UserError`` when the input caused it)."""
    t0 = time.monotonic()
    writer = result.write.mode("error").format(plan.fmt)
    if plan.fmt == "csv":
        writer = writer.option("header", "false" if plan.s3 else "true").option("escape", '"')
    with Progress(spark.sparkContext):
        try:
            writer.save(str(plan.staging))
        except Exception as exc:  # a Py4J/Spark error: keep the Python error it carries
            if "InputError" in str(exc) or "'text'" in str(exc):
                raise UserError(f"scoring failed on the input: {spark_error_line(exc)}") from None
            raise RuntimeError(f"scoring failed: {spark_error_line(exc)}") from exc
    return time.monotonic() - t0


def clean_up(plan: OutputPlan | None, scratch: Path, spark) -> None:
    """Drop the staged output (if not published), the scratch folder, and stop Spark."""
    if plan is not None and not plan.s3:
        discard(plan)  # after a successful publish the staging folder is gone already
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)
    if spark is not None:
        spark.stop()


def score(
    *,
    inputs: list[str],
    output: str,
    model_ref: str,
    text_column: str = "text",
    input_format: str | None = None,
    output_format: str | None = None,
    master: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    threads: int = 1,
    partitions: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Score ``inputs`` with a registered version; returns a summary. Writes nothing on failure."""
    check_sizes(batch_size, threads, partitions)
    configure_tracking(experiment=None)
    model_uri = parse_model_ref(model_ref, DEFAULT_MODEL_NAME)
    resolve_version(model_uri)  # a reference to nothing fails before anything is created
    scratch = Path(tempfile.mkdtemp(prefix="quantgate-score-"))
    plan: OutputPlan | None = None
    spark = None
    try:
        plan = plan_output(output, output_format, overwrite, scratch)
        mv, local_model = fetch_verified_model(model_uri, scratch / "model")
        keyed_output_check(plan)  # a refused model says so first; the key is dropped just below
        forget_key()  # Spark's Python workers inherit this environment: they never see the key
        click.echo(
            f"[score] {mv.name} v{mv.version} ({mv.tags.get('variant', '?')}) verified; starting Spark", err=True
        )
        paths = download_inputs(inputs, scratch)
        fmt_in = input_format or infer_format(inputs[0], None)
        spark = spark_session(master, batch_size=batch_size, threads=threads, partitions=partitions)
        parallelism = partitions or spark.sparkContext.defaultParallelism
        df, total = load_numbered_input(spark, paths, fmt_in, text_column, batch_size, parallelism)
        result = with_predictions(spark, df, local_model, text_column, mv)
        click.echo(
            f"[score] {total} rows, batches of {batch_size}, {parallelism} partitions, "
            f"master {spark.sparkContext.master}",
            err=True,
        )
        seconds = write_staged(spark, result, plan)
        publish(plan, result.columns, overwrite)
        click.echo(
            f"[score] wrote {total} rows to {plan.target} in {seconds:.1f}s ({total / seconds:.0f} rows/s)", err=True
        )
        return {
            "rows": total,
            "seconds": round(seconds, 2),
            "rows_per_s": round(total / seconds, 1),
            "model_version": f"{mv.name}/{mv.version}",
            "output": plan.target,
            "format": plan.fmt,
        }
    finally:
        clean_up(plan, scratch, spark)


@click.command("score", help=__doc__)
@click.option(
    "--input",
    "inputs",
    multiple=True,
    required=True,
    help="Parquet/CSV path, folder or glob; s3://bucket/key or glob (downloaded). Repeatable.",
)
@click.option(
    "--output", required=True, help="Local path (a Spark folder of part files) or s3://bucket/key (one object)."
)
@click.option(
    "--model",
    "model_ref",
    default=f"models:/{DEFAULT_MODEL_NAME}@staging",
    show_default=True,
    help="Version to score with: 7, name/7, name@alias or a models:/ URI.",
)
@click.option("--text-column", default="text", show_default=True)
@click.option(
    "--input-format", type=click.Choice(FORMATS), default=None, help="[default: from the extension, else parquet]"
)
@click.option(
    "--output-format", type=click.Choice(FORMATS), default=None, help="[default: from the extension, else parquet]"
)
@click.option("--master", default=None, help="Spark master URL [default: local[*], or what spark-submit set].")
@click.option(
    "--batch-size",
    default=DEFAULT_BATCH,
    show_default=True,
    type=int,
    help="Rows per model call (Arrow batch); the result equals pyfunc.predict on chunks of this size.",
)
@click.option("--threads", default=1, show_default=True, type=int, help="Inference threads per Spark task.")
@click.option("--partitions", default=None, type=int, help="Scoring partitions [default: Spark's default parallelism].")
@click.option("--overwrite", is_flag=True, help="Replace an existing output (still atomically).")
def cli(
    inputs,
    output,
    model_ref,
    text_column,
    input_format,
    output_format,
    master,
    batch_size,
    threads,
    partitions,
    overwrite,
):
    score(
        inputs=list(inputs),
        output=output,
        model_ref=model_ref,
        text_column=text_column,
        input_format=input_format,
        output_format=output_format,
        master=master,
        batch_size=batch_size,
        threads=threads,
        partitions=partitions,
        overwrite=overwrite,
    )


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
