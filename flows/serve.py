"""serve: MLflow's own scoring server for a registered version, with two guards in front.

`mlflow models serve` is the server quantgate's users know, and every quantgate variant
serves through it unchanged. It has two gaps a pyfunc cannot close, because both happen
before the model sees the request:

* no request-size limit: a client can post gigabytes that are parsed into memory;
* deeply nested JSON (``[[[[...]]]]``) raises RecursionError in its JSON parsing, which
  comes back as a 500.

`quantgate serve` builds the very same app (``mlflow.pyfunc.scoring_server.init``) and adds
a middleware that answers 413 above ``--max-body-mb`` and 400 for JSON it cannot parse.
Everything else (routes, payload formats, errors) is MLflow's.

Before anything loads, a ``models:/`` reference is resolved to one version, its files are
downloaded and hashed, and the SHA-256 over every file (``MLmodel``, the pyfunc code,
requirements, every artifact) must equal the registry's ``model_sha256`` tag; the server then
loads exactly that verified copy (so an alias moving, or a file changing, after the check
cannot slip in). A reference by alias (``models:/name@staging``) is served only when that
version carries its own recorded gate pass for the alias (``gate.passed.<alias>``; with an
evidence key, one the key signed for these files): an alias set by hand is refused, while
``models:/name/<N>`` serves the version asked for. Any other URI
(a local folder) is loaded as it is, checked only by the pyfunc's own artifact manifest.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from quantgate.errors import UserError
from quantgate.evidence_signing import forget_key, load_key
from quantgate.tracking import DEFAULT_TRACKING_URI
from registry_hooks.gate.provenance import superseded
from registry_hooks.gate.verdict import pass_problem, pass_tag, withdrawn_pass

ENV_MODEL_URI = "QUANTGATE_SERVE_MODEL_URI"
ENV_MAX_BODY = "QUANTGATE_SERVE_MAX_BODY_BYTES"
DEFAULT_MAX_BODY_MB = 8.0


def _error(status: int, code: str, message: str):
    from fastapi.responses import Response

    body = json.dumps({"error_code": code, "message": message})
    return Response(content=body, status_code=status, media_type="application/json")


def build_app(model_uri: str, max_body_bytes: int):
    """MLflow's scoring app for ``model_uri`` behind a body-size and JSON-depth guard."""
    import mlflow
    from mlflow.pyfunc import scoring_server

    model = mlflow.pyfunc.load_model(model_uri)  # the pyfunc verifies its manifest and labels here
    app = scoring_server.init(model)

    @app.middleware("http")
    async def guard(request, call_next):
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None:
                return _error(411, "LENGTH_REQUIRED", "send a Content-Length header")
            if not length.isdigit() or int(length) > max_body_bytes:
                return _error(413, "REQUEST_TOO_LARGE", f"request body is above the limit of {max_body_bytes} bytes")
        try:
            return await call_next(request)
        except RecursionError:
            return _error(400, "BAD_REQUEST", "request JSON is nested too deeply to parse")

    return app


def verified_copy(model_uri: str, dst: str | Path) -> Path | None:
    """Download a ``models:/`` version into ``dst`` and check every file against the registry's
    ``model_sha256``; ``ModelIntegrityError`` when they differ. ``None`` for other URIs. With an
    evidence key, any model must also run only quantgate's own serving code (``untrusted_code``)."""
    from quantgate.model_files import ModelIntegrityError, untrusted_code

    if not model_uri.startswith("models:/"):
        key = load_key()
        problem = untrusted_code(Path(model_uri)) if key is not None else None
        if problem:
            raise ModelIntegrityError(f"refusing to serve {model_uri} with an evidence key set: {problem}")
        return None
    return verified_version(model_uri, dst)[1]


def verified_version(model_uri: str, dst: str | Path, verb: str = "serve"):
    """``(version, local copy)`` of a ``models:/`` reference, with every check ``serve`` and
    ``score`` make before loading it: a reference by alias needs the holder's own gate pass for
    that alias (not withdrawn, and signed when a key is set), the files must match the registry's
    ``model_sha256``, and with a key the model may run no code but quantgate's own."""
    from quantgate.model_files import ModelIntegrityError, digest_problem, download, untrusted_code
    from quantgate.tracking import resolve_version, version_uri

    key = load_key()
    mv = resolve_version(model_uri)
    alias = model_uri.partition("@")[2]
    if alias and not mv.tags.get(pass_tag(alias)):
        raise UserError(
            f"refusing to {verb} {model_uri}: version {mv.version} holds @{alias} without a recorded gate pass "
            f"({pass_tag(alias)}), so the alias was set by hand; run `quantgate promote` or {verb} "
            f"models:/{mv.name}/{mv.version} explicitly"
        )
    withdrawn = withdrawn_pass(mv.tags, alias, strict=key is not None) if alias else None
    if withdrawn:
        raise UserError(
            f"refusing to {verb} {model_uri}: version {mv.version}'s pass for @{alias} was withdrawn: {withdrawn}; "
            f"the alias was moved back by hand"
        )
    unsigned = pass_problem(mv.tags, alias, name=mv.name, version=str(mv.version), key=key) if alias else None
    if unsigned:
        raise UserError(
            f"refusing to {verb} {model_uri}: version {mv.version}'s gate pass for @{alias} is not vouched for by "
            f"the evidence key ({unsigned}); gate it again on a machine with QUANTGATE_EVIDENCE_KEY"
        )
    from mlflow import MlflowClient

    stale = superseded(MlflowClient(), mv, key) if alias else []
    if stale:
        raise UserError(
            f"refusing to {verb} {model_uri}: version {mv.version}'s pass for @{alias} rests on an evaluation that "
            f"no longer holds: {stale[0]}; gate it again (`quantgate promote --version {mv.version}`)"
        )
    local = download(version_uri(mv), dst)
    problem = digest_problem(local, dict(mv.tags))
    if problem is None and key is not None:  # this process holds the key: run no code but quantgate's own
        problem = untrusted_code(local)
    if problem:
        raise ModelIntegrityError(f"refusing to {verb} {model_uri} (version {mv.version}): {problem}")
    return mv, local


def app_from_env():
    """uvicorn factory: each worker builds its app from the environment."""
    return build_app(os.environ[ENV_MODEL_URI], int(os.environ[ENV_MAX_BODY]))


WORKER_HEALTHCHECK_S = 120


def worker_patience(uvicorn) -> dict:
    """uvicorn (0.37 and later) restarts a worker that has not answered its supervisor within 5 s,
    and each worker loads the model before it answers: on a busy machine none got through (the
    twenty-third adversarial run saw `serve` print its banner, then kill and restart workers for a
    minute while /ping never answered). Give a worker two minutes; older uvicorns have no check."""
    import inspect

    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
        return {"timeout_worker_healthcheck": WORKER_HEALTHCHECK_S}
    return {}


def run(model_uri: str, host: str, port: int, workers: int, max_body_mb: float, banner: str = "") -> None:
    """Verify, then serve (``banner``: printed once the model has passed its checks)."""
    import uvicorn

    os.environ.setdefault("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)
    workdir = tempfile.mkdtemp(prefix="quantgate-serve-")
    try:
        local = verified_copy(model_uri, workdir)
        forget_key()  # the server's workers need no key: they never see it
        if banner:
            print(banner, flush=True)
        os.environ[ENV_MODEL_URI] = str(local) if local else model_uri
        os.environ[ENV_MAX_BODY] = str(int(max_body_mb * 1_000_000))
        # the workers (spawned: `python -c`) import installed code only, never from the working
        # folder, which with the default store is the store's (the thirty-fourth adversarial
        # run's multiprocessing/ there answered for the model in both workers)
        os.environ["PYTHONSAFEPATH"] = "1"
        uvicorn.run(
            "flows.serve:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="info",
            **worker_patience(uvicorn),
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
