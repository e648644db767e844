"""Where `quantgate score` reads and writes: local paths and globs, and s3:// objects.

Spark reads s3a:// only with the hadoop-aws jars, which are not part of pyspark and cannot be
fetched offline, so s3:// inputs are **downloaded** (boto3, to a temporary folder) and read
locally, and an s3:// output is written locally and **uploaded as one object**. Both use the
standard AWS settings (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``) and
``MLFLOW_S3_ENDPOINT_URL`` for an S3-compatible store, as MLflow does. Downloads land on the
driver, so this suits a local master or a driver folder the executors share; a cluster whose
Spark has the hadoop-aws jars reads ``s3a://`` (and ``hdfs://``, …) inputs itself: those are
passed to Spark unchanged.

Output appears whole or not at all:

* local (on a cluster: a folder the driver and every executor share, e.g. an NFS mount):
  Spark writes a hidden sibling ``.<name>.partial-<pid>-<id>`` in the same folder, which
  is renamed onto the output path only after the job succeeded (``rename`` is atomic within a
  filesystem). A killed run leaves at most its hidden sibling, removed by the next run once its
  process is gone; the output path never holds a partial result.
* s3://: S3 has no rename, so the result is one object (Spark's part files merged in order),
  uploaded in one PUT or one multipart upload; S3 makes an object visible only when its upload
  completes.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from quantgate.errors import UserError

FORMATS = ("parquet", "csv")
PARTIAL = re.compile(r"^\.(?P<name>.+)\.partial-(?P<pid>\d+)-[0-9a-f]{8}$")


def is_s3(path: str) -> bool:
    """``s3://`` is handled here with boto3; ``s3a://``, ``hdfs://`` and other Hadoop URIs go to Spark as they are."""
    return str(path).startswith("s3://")


def has_scheme(path: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", str(path)) is not None


def split_s3(uri: str) -> tuple[str, str]:
    rest = uri.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise UserError(f"{uri!r} names no bucket: use s3://bucket/key")
    return bucket, key


def infer_format(path: str, given: str | None) -> str:
    """``--format`` if given, else from the extension; a folder or glob without one is Parquet."""
    if given:
        return given
    name = str(path).rstrip("/").lower()
    for fmt in FORMATS:
        if name.endswith("." + fmt) or name.endswith(f".{fmt}*") or name.endswith(f"*.{fmt}"):
            return fmt
    return "parquet"


def s3_client():
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None)


def s3_matches(uri: str, client=None) -> list[str]:
    """Keys under ``s3://bucket/pattern`` (``*``, ``?``, ``[...]`` globs; a plain prefix that is a
    "folder" matches everything below it)."""
    bucket, pattern = split_s3(uri)
    client = client or s3_client()
    prefix = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    if any(c in pattern for c in "*?["):
        chosen = [k for k in keys if fnmatch.fnmatchcase(k, pattern)]
    else:
        chosen = [k for k in keys if k == pattern or k.startswith(pattern.rstrip("/") + "/")]
    chosen = [k for k in chosen if not Path(k).name.startswith(("_", "."))]  # _SUCCESS, hidden files
    return sorted(chosen)


def download_inputs(uris: list[str], into: Path) -> list[str]:
    """Local paths for the inputs: s3:// objects are downloaded (in order, keeping their names
    distinct), local paths and globs pass through for Spark to expand, once something is there
    (Spark's own "path not found" is a traceback)."""
    out, client = [], None
    for i, uri in enumerate(uris):
        if not is_s3(uri):
            local = uri.removeprefix("file://")  # s3a://, hdfs://, …: for a Spark that can read them
            if not has_scheme(local) and "{" not in local and not glob.glob(local):  # Spark's {a,b}: left to Spark
                raise UserError(f"--input {uri}: no such file, folder or match")
            out.append(uri)
            continue
        client = client or s3_client()
        bucket, _ = split_s3(uri)
        keys = s3_matches(uri, client)
        if not keys:
            raise UserError(f"no objects match {uri}")
        for j, key in enumerate(keys):
            local = into / f"in{i:03d}-{j:06d}-{Path(key).name}"
            client.download_file(bucket, key, str(local))
            out.append(str(local))
    return out


@dataclass(frozen=True)
class OutputPlan:
    target: str  # what the user asked for
    fmt: str
    staging: Path  # where Spark writes
    s3: tuple[str, str] | None = None  # (bucket, key) for an s3:// target

    @property
    def local_target(self) -> Path:
        return Path(self.target)


def plan_output(target: str, fmt: str | None, overwrite: bool, scratch: Path) -> OutputPlan:
    """Check the output before any work is done, and choose where Spark writes."""
    fmt = infer_format(target, fmt)
    if is_s3(target):
        bucket, key = split_s3(target)
        if not key or key.endswith("/"):
            raise UserError(f"an s3:// output is one object: give a key, e.g. s3://{bucket}/scores.{fmt}")
        if not overwrite and s3_matches(f"s3://{bucket}/{key}"):
            raise UserError(f"{target} already exists; pass --overwrite to replace it")
        return OutputPlan(target, fmt, scratch / "out", (bucket, key))
    if has_scheme(target) and not target.startswith("file://"):
        raise UserError(
            f"an output must be a local path (a folder every executor shares, on a cluster) or "
            f"s3://bucket/key, not {target.split('://', 1)[0]}://"
        )
    named = Path(target.removeprefix("file://")).expanduser()
    link = linked_part(named)
    if link:
        raise UserError(
            f"--output {target}: {link} is a symbolic link, and score writes through none (one planted in "
            "the working folder would send the output, or an --overwrite, wherever it points): name the real path"
        )
    path = named.resolve()
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite to replace it (an earlier score output only)")
    if path.exists():
        not_ours = not_an_earlier_output(path)
        if not_ours:
            raise UserError(
                f"--overwrite replaces only an earlier score output, and {path} {not_ours}: choose another --output"
            )
    if not path.parent.is_dir():
        raise UserError(f"the output's folder {path.parent} does not exist")
    remove_stale_partials(path)
    staging = path.with_name(f".{path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    return OutputPlan(str(path), fmt, staging)


def linked_part(named: Path) -> Path | None:
    """The first part of the output path ``named`` that is a symbolic link (``None``: none is): the
    output itself, and every folder on the way to it from the working folder where it lies inside
    (above, the folders are the user's: a home reached through a link is fine). The
    forty-sixth adversarial run put a dangling ``scores.parquet`` link in the store's folder (the
    key holder's working folder), and ``score --output scores.parquet --overwrite`` replaced an
    earlier output elsewhere that the writer could not touch."""
    cwd = Path.cwd()
    absolute = cwd / named  # named, where it is absolute
    if absolute.is_relative_to(cwd):
        below = absolute.relative_to(cwd).parts
        parts = [cwd.joinpath(*below[: i + 1]) for i in range(len(below))]
    else:
        parts = [absolute]
    return next((part for part in parts if part.is_symlink()), None)


MARKER = "_QUANTGATE_SCORE.json"  # what score leaves in its output: the files it wrote


def not_an_earlier_output(path: Path) -> str | None:
    """Why ``path`` is not a folder an earlier ``score`` wrote, exactly as it wrote it (``None``
    when it is): ``--overwrite`` deletes what it replaces, so it must never take a person's folder
    (a Spark dataset of their own included), files a person added to an earlier output, the
    working folder or anything above it (the twelfth and thirteenth adversarial runs lost all of
    these). Asked when the job is planned and again just before the old output is replaced."""
    if Path.cwd().resolve().is_relative_to(path):
        return "is the working folder or holds it"
    if not path.is_dir():
        return "is a file, not a folder score wrote"
    try:
        written = set(json.loads((path / MARKER).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"has no readable {MARKER} (score leaves one in every output it writes)"
    present = {entry.name for entry in path.iterdir()} - {MARKER}
    added = sorted(present - written)
    if added:
        return f"holds files score did not write there ({', '.join(added[:3])})"
    if any((path / name).is_dir() and not (path / name).is_symlink() for name in present):
        return "holds a folder, and score writes only files"
    return None


def mark_output(folder: Path) -> None:
    """Record the files a finished job wrote, so a later ``--overwrite`` can tell its output."""
    files = sorted(entry.name for entry in folder.iterdir() if entry.name != MARKER)
    (folder / MARKER).write_text(json.dumps({"files": files}, indent=1), encoding="utf-8")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(path: Path) -> list[Path]:
    """Hidden partial outputs of ``path`` left by runs that were killed (their process is gone)."""
    removed = []
    for sibling in path.parent.glob(f".{path.name}.partial-*"):
        m = PARTIAL.match(sibling.name)
        if m and m["name"] == path.name and not _pid_alive(int(m["pid"])):
            shutil.rmtree(sibling, ignore_errors=True) if sibling.is_dir() else sibling.unlink(missing_ok=True)
            removed.append(sibling)
    return removed


def part_files(folder: Path, fmt: str) -> list[Path]:
    return sorted(p for p in folder.glob("part-*") if p.suffix == f".{fmt}" or p.name.endswith(f".{fmt}"))


def merge_parts(folder: Path, fmt: str, into: Path, header: list[str]) -> None:
    """Spark's part files, in order, as one file (for an S3 object)."""
    parts = part_files(folder, fmt)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        writer = None
        try:
            for part in parts:
                table = pq.read_table(part)
                writer = writer or pq.ParquetWriter(into, table.schema)
                writer.write_table(table)
        finally:
            if writer:
                writer.close()
        if writer is None:
            raise RuntimeError("Spark wrote no part files")
    else:  # parts were written without a header
        import csv

        with open(into, "w", encoding="utf-8", newline="") as out:
            csv.writer(out).writerow(header)
            for part in parts:
                with open(part, encoding="utf-8") as src:
                    shutil.copyfileobj(src, out)


def publish(plan: OutputPlan, header: list[str], overwrite: bool) -> None:
    """Make the finished output visible in one step."""
    if plan.s3:
        merged = plan.staging.with_name(f"merged.{plan.fmt}")
        merge_parts(plan.staging, plan.fmt, merged, header)
        s3_client().upload_file(str(merged), *plan.s3)  # visible only once the upload completes
        return
    target = plan.local_target
    mark_output(plan.staging)
    if target.exists() and overwrite:
        changed = not_an_earlier_output(target)  # again: a person may have added files meanwhile
        if changed:
            raise UserError(f"{target} {changed} since the job started; it was left as it is")
        old = target.with_name(f".{target.name}.replaced-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
        os.rename(plan.staging, target)
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    else:
        os.rename(plan.staging, target)


def discard(plan: OutputPlan) -> None:
    if plan.staging.exists():
        shutil.rmtree(plan.staging, ignore_errors=True)
