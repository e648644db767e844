"""The webhook receiver: MLflow posts registry events here; new variants get evaluated and gated.

Each delivery is checked (signature, freshness, first time seen) and answered at once; the
work runs on one background thread fed by a bounded queue, so a slow evaluation never holds
MLflow's request open and a flood of events cannot grow memory without bound (503 when full;
MLflow retries). The work is the same two steps a person would run - ``python -m
flows.evaluate`` then ``python -m flows.promote`` - as subprocesses, so a crash in
one job cannot take the receiver down. Every outcome is visible on the version: tag
``hooks.status`` says what happened and the gate's verdict, read back from the registry
(``gate.decision`` / ``gate.action``); only the gate ever sets an alias, under the same
promotion lock as ``quantgate promote`` (``--lock-file``). Accepted delivery ids are kept in a
SQLite file, so a delivery replayed after a restart is still a duplicate; a body nested too
deeply is answered 400 before it is parsed.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from quantgate.evidence_signing import KEY_ENV, KEY_FILE_ENV, redact_own_key
from registry_hooks.webhooks.events import (
    REEVALUATE_TAG,
    DurableSeenDeliveries,
    Job,
    SeenDeliveries,
    delivery_problem,
    header_number,
    is_candidate,
    plan,
)

log = logging.getLogger("quantgate.hooks")
MAX_BODY = 1_000_000
STEP_TIMEOUT_S = 1800


def step_outcome(module: str, code: int, output: str) -> str:
    """What of a step's output goes into the ``hooks.status`` tag: quantgate's own one-line error
    (``error: …``, already stripped of the key), never other lines. A library's log line can carry
    any file's content (the thirty-eighth adversarial run's requirements.txt included the evidence
    key file, and MLflow logged its lines as unmet requirements). The whole output stays in the
    receiver's own log."""
    if code != 0:
        log.warning("%s exited %s:\n%s", module, code, redact_own_key(output.strip()))
    errors = [line.strip() for line in output.splitlines() if line.lower().startswith("error:")]
    return errors[-1] if errors else "no error line; see the receiver's log"


class Receiver:
    def __init__(
        self,
        *,
        secret: str,
        model_name: str,
        thresholds: str | None,
        queue_size: int = 32,
        max_age_s: float = 300,
        tag_wait_s: float = 30,
        latency_runs: int = 200,
        seen_db: str | None = None,
        lock_file: str | None = None,
    ):
        """``seen_db``: the SQLite file of accepted delivery ids (``None``: kept in memory only,
        forgotten on restart). ``lock_file``: passed to every gate as ``--lock-file``."""
        if not secret:
            raise ValueError("a webhook secret is required")
        self.secret, self.model_name, self.thresholds = secret, model_name, thresholds
        self.max_age_s, self.tag_wait_s, self.latency_runs = max_age_s, tag_wait_s, latency_runs
        self.lock_file = lock_file
        self.jobs: queue.Queue[Job] = queue.Queue(maxsize=queue_size)
        self.seen = DurableSeenDeliveries(seen_db, keep_s=max(2 * max_age_s, 3600)) if seen_db else SeenDeliveries()
        self.done: list[tuple[Job, str]] = []  # outcomes, newest last (for logs and tests)

    # ---------------------------------------------------------------- request path (fast)
    def handle(self, headers, body: bytes) -> tuple[int, dict]:
        problem = delivery_problem(headers, body, self.secret, time.time(), self.max_age_s)
        if problem:
            return 401, {"error": problem}
        delivery_id = {k.lower(): v for k, v in headers.items()}["x-mlflow-delivery-id"]
        try:
            job, why = plan(body, self.model_name)  # refuses over-deep JSON before parsing it
        except ValueError as exc:
            return 400, {"error": str(exc)}
        if not self.seen.first_time(delivery_id):
            return 200, {"status": "duplicate delivery: already handled"}
        if job is None:
            return 200, {"status": why}
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            self.seen.forget(delivery_id)  # not taken: MLflow's retry must be able to deliver it
            return 503, {"error": "busy: job queue is full, retry later"}
        return 202, {"status": f"queued: {why}", "version": job.version}

    # ---------------------------------------------------------------- worker (slow)
    def _tag(self, job: Job, value: str) -> str:
        """Write ``value`` to the version's ``hooks.status`` tag, the key blanked out (the steps'
        output is copied into a tag any store reader sees); returns what was written, which is
        also all the receiver logs."""
        value = redact_own_key(value)
        try:
            MlflowClient().set_model_version_tag(job.name, job.version, "hooks.status", value[:4000])
        except MlflowException as exc:
            log.error("cannot tag %s v%s: %s", job.name, job.version, exc)
        return value

    def _tags_when_ready(self, job: Job) -> dict[str, str]:
        """Tags set right after creation may lag the created event: wait briefly for them."""
        deadline = time.monotonic() + self.tag_wait_s
        while True:
            tags = dict(MlflowClient().get_model_version(job.name, job.version).tags)
            if tags.get("parent_version") or tags.get("variant") == "fp32" or time.monotonic() > deadline:
                return tags
            time.sleep(1)

    def _step(self, module: str, *args: str) -> tuple[int, str]:
        # no tqdm text in the status; -P and PYTHONSAFEPATH: the step imports installed code only,
        # never a module a store writer planted in the receiver's working folder (the thirty-fourth
        # adversarial run's flows/evaluate.py there ran with the key and wrote it out)
        env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "PYTHONSAFEPATH": "1"}
        proc = subprocess.run(
            [sys.executable, "-P", "-m", module, *args], capture_output=True, text=True, timeout=STEP_TIMEOUT_S, env=env
        )
        return proc.returncode, step_outcome(module, proc.returncode, proc.stdout + proc.stderr)

    def run_job(self, job: Job) -> str:
        tags = self._tags_when_ready(job)
        ok, why = is_candidate(tags, job.version)
        if not ok:
            return f"skipped: {why}"
        if job.why == f"tag {REEVALUATE_TAG}" and (os.environ.get(KEY_ENV) or os.environ.get(KEY_FILE_ENV)):
            # Anyone who can write a tag can ask; measured again and again, noise passes in the end
            # (the twelfth adversarial run promoted on its third try): a key holder decides.
            return (
                f"skipped: with an evidence key, {REEVALUATE_TAG} does not re-measure a version; "
                f"a key holder runs `quantgate evaluate --version {job.version}`"
            )
        self._tag(job, f"evaluating ({job.why})")
        measure = ["--version", job.version, "--model-name", job.name, "--latency-runs", str(self.latency_runs)]
        if os.environ.get(KEY_ENV) or os.environ.get(KEY_FILE_ENV):
            # Anyone who can register a version can register a copy of a rejected one; measured
            # again per copy, noise passes in the end (the fourteenth adversarial run): new files only.
            measure.append("--unmeasured-only")
        code, eval_tail = self._step("flows.evaluate", *measure)
        evaluated = "evaluated" if code == 0 else f"evaluation failed (exit {code}: {eval_tail})"
        # The gate runs either way: after a failed evaluation it rejects (fail-closed) and
        # writes its reasons where people look - version tags and description.
        args = ["--version", job.version, "--model-name", job.name]
        if self.thresholds:
            args += ["--thresholds", self.thresholds]
        if self.lock_file:
            args += ["--lock-file", self.lock_file]
        before = tags.get("gate.run_id")
        code, tail = self._step("flows.promote", *args)
        return f"{evaluated}; {self._verdict(job, before, code, tail)}"

    @staticmethod
    def _verdict(job: Job, run_before: str | None, code: int, tail: str) -> str:
        """The gate's verdict as it recorded it in the registry (not the process's output)."""
        after = MlflowClient().get_model_version(job.name, job.version).tags
        if after.get("gate.run_id") in (None, run_before):
            return f"gate rejected: it recorded no decision (exit {code}: {tail})"
        decision = after.get("gate.decision", "rejected")
        why = after.get("gate.action") or after.get("gate.reasons", "")
        return f"gate {decision}: {why}" + ("" if code in (0, 1) else f" (exit {code}: {tail})")

    def work_forever(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                outcome = self.run_job(job)
            except Exception as exc:  # the receiver must survive any one job; the reason is kept
                outcome = f"failed: {type(exc).__name__}: {exc}"
            outcome = self._tag(job, outcome)
            self.done.append((job, outcome))
            log.info("%s v%s: %s", job.name, job.version, outcome)
            self.jobs.task_done()

    # ---------------------------------------------------------------- HTTP
    def server(self, host: str, port: int) -> ThreadingHTTPServer:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 - http.server's naming
                if self.path == "/health":
                    self._answer(200, {"status": "ok", "queued": receiver.jobs.qsize()})
                else:
                    self._answer(404, {"error": "not found"})

            def do_POST(self):  # noqa: N802
                length = header_number(self.headers.get("Content-Length"))
                if length is None or length > MAX_BODY:
                    self._answer(411 if length is None else 413, {"error": "body missing or too large"})
                    return
                body = self.rfile.read(length)
                status, answer = receiver.handle(dict(self.headers.items()), body)
                self._answer(status, answer)

            def log_message(self, fmt, *args):  # route access logs through logging, never bodies
                log.info("%s %s", self.address_string(), fmt % args)

        return ThreadingHTTPServer((host, port), Handler)

    def serve(self, host: str, port: int) -> None:
        threading.Thread(target=self.work_forever, name="quantgate-hooks-worker", daemon=True).start()
        httpd = self.server(host, port)
        log.info("listening on http://%s:%d for %s events of %r", host, port, "webhook", self.model_name)
        try:
            httpd.serve_forever()
        finally:
            httpd.server_close()
