"""Signed evidence: an HMAC over what an evaluation measured, with a key the tracking store
does not hold.

Every digest the gate checks (the model's files, the logged figures, the predictions table) is
a plain SHA-256 kept in the same tracking store as the things it describes. Anyone who can
write artifacts, metrics and tags there can also recompute those digests, or fabricate a whole
evaluation run, and no check made from the store's contents alone can tell. The key closes
that: ``evaluate`` signs its evidence with it, the gate verifies the signature, and ``promote``
signs the recorded pass that ``quantgate serve`` requires of an alias holder, and ``attest``
signs an FP32 version a key holder accepts as the parent variants are compared with. A writer
without the key can change the evidence but cannot make a signature that verifies.

The key comes from the environment of the machines that evaluate, gate and serve (never from
the command line or the store): ``QUANTGATE_EVIDENCE_KEY`` (at least 32 characters), or
``QUANTGATE_EVIDENCE_KEY_FILE`` naming a file that holds it. When a key is set, evidence without
a valid signature is refused; when none is set, nothing is signed or checked (the behaviour of
a single-user store).

Pure functions and the environment only: no MLflow, no click.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from quantgate.contract import (
    ATTESTED_DATA_TAG,
    ATTESTED_TRAINING_TAG,
    DATA_DIGEST_PARAM,
    DEVICE_TAG,
    EVALUATED_DATA_TAG,
    FP32_ATTESTATION_TAG,
    HOST_KEYS,
    MANIFEST_TAG,
    METRICS_DIGEST_TAG,
    MODEL_DIGEST_TAG,
    NONE_RECORDED,
    PARENT_VERSION_TAG,
    PRECISION_TAG,
    PREDICTIONS_DIGEST_TAG,
    RECIPE_TAG,
    VARIANT_TAG,
)
from quantgate.description import block_sha256
from quantgate.errors import UserError
from quantgate.file_trust import replace_problem, store_folders
from quantgate.tracking import DEFAULT_TRACKING_URI, absolute_tracking_uri

KEY_ENV = "QUANTGATE_EVIDENCE_KEY"
KEY_FILE_ENV = "QUANTGATE_EVIDENCE_KEY_FILE"
MIN_KEY_CHARS = 32
SCHEME = "hmac-sha256"


class EvidenceKeyError(UserError):
    """The evidence key named in the environment is missing, unreadable or too short."""


def load_key(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The evidence key from the environment, or ``None`` when none is configured."""
    environ = os.environ if environ is None else environ
    value, source = environ.get(KEY_ENV, ""), KEY_ENV
    if not value and environ.get(KEY_FILE_ENV):
        source = f"{KEY_FILE_ENV}={environ[KEY_FILE_ENV]}"
        path = Path(environ[KEY_FILE_ENV]).expanduser()
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            raise EvidenceKeyError(f"cannot read the evidence key from {source}: {exc}") from None
        if mode & 0o222:  # quantgate only reads it; any file it writes could be a link planted onto it
            raise EvidenceKeyError(
                f"the evidence key file {path} is writable (mode {mode & 0o777:o}): a link a store writer plants "
                f"where quantgate writes a file could overwrite it; make it read-only: chmod 400 {path}"
            )
        problem = replace_problem(path, key_store_folders(environ))
        if problem:  # checked before reading: a file put there by someone else is never read
            raise EvidenceKeyError(
                f"the evidence key file {path} could be replaced by a store writer: {problem}; keep it in a folder "
                "only you can write, outside the tracking store's (e.g. /etc/quantgate/ or ~/.config/quantgate/)"
            )
        try:
            value = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EvidenceKeyError(f"cannot read the evidence key from {source}: {exc}") from None
    value = value.strip()
    if not value:
        return None
    if len(value) < MIN_KEY_CHARS:
        raise EvidenceKeyError(
            f"the evidence key in {source} has {len(value)} characters; use at least {MIN_KEY_CHARS} "
            '(e.g. python -P -c "import secrets; print(secrets.token_hex(32))")'
        )
    return value.encode("utf-8")


def key_store_folders(environ: Mapping[str, str]) -> list[Path]:
    """The store folders a key file must lie outside of (:func:`quantgate.file_trust.store_folders`):
    those of ``$MLFLOW_TRACKING_URI`` (else quantgate's default store in the working folder), and
    of the URI this process set, if it set another. The forty-first adversarial run renamed the key
    holder's key file, kept beside ``mlflow.db``, aside without reading it and put its own key in its
    place: every signature the key holder's gate then checked was one the writer could make, and the
    gate staged a build that answered one label for every text."""
    uris = [environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI]
    if "mlflow" in sys.modules:  # a process that set its URI in code (tests, notebooks)
        uris.append(sys.modules["mlflow"].get_tracking_uri())
    return [folder for uri in dict.fromkeys(uris) for folder in store_folders(uri)]


# The shortest piece of the key that is blanked out wherever it appears; shorter pieces match
# ordinary text (hex digests) by chance, and leave too little of a 32-byte key to guess the rest.
KEY_PIECE = 8


def redact(text: str, key: bytes | None) -> str:
    """``text`` with the evidence key blanked out, before it goes anywhere a store reader sees
    (a version tag holding an error): quantgate never puts the key into a message on purpose,
    but an error can quote a file it read. Every run of ``KEY_PIECE`` or more characters of the
    key goes, not the whole key alone: the forty-fifth adversarial run had an error quote the
    key file's first 60 characters, and the key's public id named the last 4 in 3 s."""
    if not key:
        return text
    secret = key.decode("utf-8", "replace")
    if len(secret) < KEY_PIECE:
        return text.replace(secret, "[evidence key]") if secret else text
    pieces = {secret[i : i + KEY_PIECE] for i in range(len(secret) - KEY_PIECE + 1)}
    out, i = [], 0
    while i < len(text):
        if text[i : i + KEY_PIECE] in pieces:
            end = i + KEY_PIECE
            while end < len(text) and text[i : end + 1] in secret:
                end += 1
            out.append("[evidence key]")
            i = end
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def redact_own_key(text: str) -> str:
    """``text`` with this process's evidence key, if one is set and readable, blanked out: for
    text that leaves the process (one-line errors on a terminal, the receiver's tags and log).
    A bad key is its own error, and there is then no key to hide."""
    try:
        return redact(text, load_key())
    except EvidenceKeyError:
        return text


def forget_key(environ: dict | None = None) -> None:
    """Drop the key's variables from this process's environment, so the processes it starts
    (server workers, steps that need no key) do not inherit them."""
    environ = os.environ if environ is None else environ
    for name in (KEY_ENV, KEY_FILE_ENV):
        environ.pop(name, None)


SECRET_ENVS = (KEY_ENV, KEY_FILE_ENV, "QUANTGATE_WEBHOOK_SECRET")  # kept out of every command quantgate prints


def plain_mlflow_command(
    args: str,
    *,
    tracking_uri: str | None = None,
    env: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """How to run ``mlflow <args>`` (``mlflow ui``, ``mlflow models serve``) so that it runs no
    code from the working folder and holds none of quantgate's secrets: from a fresh private
    folder, with the secrets this process has set left out of its environment. uvicorn, which
    those commands start, puts its working folder first on the import path, and with the default
    store that folder is the store's: the forty-second adversarial run planted an ``mlflow``
    package there, and the ``mlflow models serve`` that ``main`` had printed read the key file and
    changed the staged version's answers. ``tracking_uri`` is set as ``MLFLOW_TRACKING_URI``, made
    absolute (so is any store ``args`` names: :func:`quantgate.tracking.absolute_tracking_uri`),
    and ``env`` set too; ``environ`` is this process's environment.

    Where this process has the key, the command says to run it as a user who cannot read the key
    file: a process of the key holder's user can read it, wherever it is named, and MLflow's servers
    do what the store says. ``mlflow models serve`` runs the stored code (the forty-third run found
    the key file's name in another keyed process's ``/proc/<pid>/environ``), and ``mlflow ui``
    serves any file a version's source names (the forty-third run registered a version whose source
    was the key's folder and downloaded the key from the key holder's UI on 127.0.0.1)."""
    environ = os.environ if environ is None else environ
    unset = "".join(f"-u {name} " for name in SECRET_ENVS if environ.get(name))
    values = {**({"MLFLOW_TRACKING_URI": absolute_tracking_uri(tracking_uri)} if tracking_uri else {}), **(env or {})}
    assign = "".join(f"{name}={shlex.quote(value)} " for name, value in values.items())
    command = f'cd "$(mktemp -d)" && {"env " + unset if unset else ""}{assign}mlflow {args}'
    keyed = any(environ.get(name) for name in (KEY_ENV, KEY_FILE_ENV))
    return command + ("   # as a user who cannot read the evidence key file" if keyed else "")


def mlflow_ui_command(tracking_uri: str, environ: Mapping[str, str] | None = None) -> str:
    """How to start MLflow's UI on this store at http://127.0.0.1:5000 (:func:`plain_mlflow_command`)."""
    store = shlex.quote(absolute_tracking_uri(tracking_uri))
    return plain_mlflow_command(f"ui --backend-store-uri {store} --host 127.0.0.1 --port 5000", environ=environ)


@contextmanager
def key_withheld() -> Iterator[None]:
    """Within: the key's variables are out of the environment (so a step started here, which
    needs no key, does not inherit it), and :data:`WITHHELD_ENV` says a key holder started it;
    restored after."""
    saved = {name: os.environ[name] for name in (KEY_ENV, KEY_FILE_ENV, WITHHELD_ENV) if name in os.environ}
    withheld = any(name in saved for name in (KEY_ENV, KEY_FILE_ENV))
    forget_key()
    if withheld:
        os.environ[WITHHELD_ENV] = "1"
    try:
        yield
    finally:
        os.environ.pop(WITHHELD_ENV, None)
        os.environ.update(saved)


# Set in a step a key holder's process started without the key: the key is still in reach (a
# parent's /proc/<pid>/environ names its file, and the step runs as the key holder), so the step
# must run no code a store writer chose either.
WITHHELD_ENV = "QUANTGATE_KEY_WITHHELD"


def key_in_reach() -> bool:
    """Whether this process holds the evidence key, or was started by one that does."""
    return load_key() is not None or os.environ.get(WITHHELD_ENV) == "1"


def key_id(key: bytes) -> str:
    """A short public name for a key, so a refusal can say "signed with another key" without
    revealing anything about it."""
    return hashlib.sha256(b"quantgate-evidence-key-id\0" + key).hexdigest()[:12]


def canonical(payload: Mapping[str, str]) -> bytes:
    """The one byte string a payload is signed as: sorted keys, every value text."""
    return json.dumps({k: str(v) for k, v in payload.items()}, sort_keys=True, separators=(",", ":")).encode()


def sign(key: bytes, kind: str, payload: Mapping[str, str]) -> str:
    """``hmac-sha256:<key id>:<hex>`` over ``kind`` and the payload (a signature for one kind of
    statement, e.g. an evaluation, never verifies as another, e.g. a gate pass)."""
    mac = hmac.new(key, kind.encode() + b"\0" + canonical(payload), hashlib.sha256).hexdigest()
    return f"{SCHEME}:{key_id(key)}:{mac}"


def signature_problem(key: bytes, kind: str, payload: Mapping[str, str], signature: str | None) -> str | None:
    """Why ``signature`` does not vouch for ``payload`` under ``key`` (``None`` when it does)."""
    if not signature:
        return "it is not signed"
    scheme, _, rest = signature.partition(":")
    signed_by, _, _ = rest.partition(":")
    if scheme != SCHEME or not signed_by:
        return f"its signature {signature[:40]!r} is not an {SCHEME} signature"
    if signed_by != key_id(key):
        return f"it was signed with key {signed_by}, not with this machine's key {key_id(key)}"
    if not hmac.compare_digest(signature, sign(key, kind, payload)):
        return (
            "its signature does not match what is recorded now (edited after it was signed;"
            " the registered model's name and the version number are part of what is signed)"
        )
    return None


# ------------------------------------------------------------------ the statements signed
# v2: binds the parent's attestation; v3: the version's identity; v4: a variant's graph was rebuilt
# from its parent and recipe before it ran (flows/rebuild.py), so no earlier signature counts;
# v5: the digest of the test split it measured, and the version's variant, precision and recipe
# tags (a keyed evaluate rebuilt the files from that recipe)
EVALUATION = "quantgate.evaluation.v5"
GATE_PASS = "quantgate.gate-pass.v1"
FP32_ATTESTATION = "quantgate.fp32-attestation.v2"  # v2: binds the training data's digest


def attestation_payload(name: str, version: str, version_tags: Mapping[str, str]) -> dict[str, str]:
    """What ``quantgate attest`` vouches for: this registered version, with exactly these files
    (its ``model_sha256`` and artifacts' manifest), is an FP32 model a key holder accepts as a
    parent. Parity with a parent means nothing unless the parent itself is the real model: ``train``
    runs without the key, so without this statement any store writer could register a parent
    sharing a variant's defect. It also fixes the data the model was trained and split with
    (``fp32_dataset_digest``, read from its training run when attested): ``evaluate --dataset
    auto`` accepts only data with that digest, and a run param is no proof once signed (a writer
    can add a param a run lacks, or rewrite one in a sqlite file; the twenty-eighth adversarial
    run did both). ``main`` also signs the digest of the parameters its train step ran with
    (``fp32_training_sha256``): it reuses a train run only for the same ones, and a run's params
    can be rewritten in a sqlite file (the thirty-first run passed off a one-epoch smoke test as
    the three-epoch model asked for)."""
    return {
        "name": name,
        "version": str(version),
        "model_sha256": version_tags.get(MODEL_DIGEST_TAG, ""),
        "manifest_sha256": version_tags.get(MANIFEST_TAG, ""),
        "dataset_digest": version_tags.get(ATTESTED_DATA_TAG, ""),
        "training_sha256": version_tags.get(ATTESTED_TRAINING_TAG, ""),
    }


def attestation_problem(key: bytes, name: str, version: str, version_tags: Mapping[str, str]) -> str | None:
    """Why version ``version``'s attestation does not vouch for it as it is registered now
    (``None`` when it does): missing, made with another key, or its files' digests changed since."""
    if version_tags.get(PARENT_VERSION_TAG):
        return f"it has a {PARENT_VERSION_TAG} tag (a variant is never a parent)"
    if not version_tags.get(MODEL_DIGEST_TAG):
        return f"it has no {MODEL_DIGEST_TAG} tag"
    payload = attestation_payload(name, version, version_tags)
    problem = signature_problem(key, FP32_ATTESTATION, payload, version_tags.get(FP32_ATTESTATION_TAG))
    return None if problem is None else problem.replace("it is not signed", "it was never attested")


def attested_data_problem(
    key: bytes, name: str, version: str, version_tags: Mapping[str, str], found: str
) -> str | None:
    """Why data of digest ``found`` is not the data version ``version``'s attestation signed
    (``None``: it is). With a key, tags only say where the data lies; the attestation says which
    data it is, and both ``evaluate --dataset auto`` and a static build's ``auto`` calibration
    accept only that data."""
    problem = attestation_problem(key, name, version, version_tags)
    if problem:
        return f"its attestation does not hold ({problem})"
    recorded = version_tags.get(ATTESTED_DATA_TAG, "")
    if recorded in ("", NONE_RECORDED):
        return (
            f"it was attested without a {DATA_DIGEST_PARAM} (its run logged none), so nothing says which data "
            "it was trained on"
        )
    if found != recorded:
        return (
            f"the data its tags name is not the data it was attested with ({DATA_DIGEST_PARAM} {recorded[:12]}, "
            f"found {found[:12]})"
        )
    return None


def evaluation_payload(
    name: str,
    version: str,
    run_id: str,
    version_tags: Mapping[str, str],
    run_tags: Mapping[str, str],
    parent_tags: Mapping[str, str] | None = None,
    *,
    identity: str,
) -> dict[str, str]:
    """What an evaluation vouches for, read from the version's and the evaluation run's tags:
    which files of which version it measured (and against which parent's files, as attested),
    what the version says they are (variant, precision, and the recipe a keyed evaluate rebuilt
    them from),
    the digests of the figures and the predictions table it logged and of the test split it measured,
    and the host it measured on.
    ``evaluate`` signs it once those tags are written; the gate rebuilds it from the same tags
    (``parent_tags``: the parent version's tags, none for a version without a parent;
    ``identity``: quantgate.tracking.version_identity, which a version registered again under
    the same name and number, or a copy, does not share)."""
    parent_tags = parent_tags or {}
    return {
        "name": name,
        "version": str(version),
        "version_identity": identity,
        "run_id": run_id,
        "manifest_sha256": version_tags.get(MANIFEST_TAG, ""),
        "model_sha256": version_tags.get(MODEL_DIGEST_TAG, ""),
        "device": version_tags.get(DEVICE_TAG, ""),
        "parent_version": version_tags.get(PARENT_VERSION_TAG, ""),
        "variant": version_tags.get(VARIANT_TAG, ""),
        "precision": version_tags.get(PRECISION_TAG, ""),
        "recipe": version_tags.get(RECIPE_TAG, ""),
        "parent_model_sha256": parent_tags.get(MODEL_DIGEST_TAG, ""),
        "parent_attestation": parent_tags.get(FP32_ATTESTATION_TAG, ""),
        "metrics_sha256": run_tags.get(METRICS_DIGEST_TAG, ""),
        "predictions_sha256": run_tags.get(PREDICTIONS_DIGEST_TAG, ""),
        "test_data_digest": run_tags.get(EVALUATED_DATA_TAG, ""),
        **{f"host:{tag}": run_tags.get(tag, "") for tag in sorted(HOST_KEYS.values())},
    }


def gate_pass_payload(
    *, name: str, version: str, alias: str, model_sha256: str, recorded: str, evaluation: str
) -> dict[str, str]:
    """What a recorded gate pass vouches for: this version's files passed for this alias on this
    evaluation (``recorded``: the pass tag's own text, its time and thresholds digest;
    ``evaluation``: the evaluation's signature), so evaluating the version again withdraws it."""
    return {
        "name": name,
        "version": str(version),
        "alias": alias,
        "model_sha256": model_sha256,
        "recorded": recorded,
        "evaluation": evaluation,
    }


DESCRIPTION_BLOCK = "quantgate.description-block.v1"


def block_seal(key: bytes | None, name: str, version: str) -> Callable[[str], str]:
    """What version ``version``'s ``description_block_sha256`` tag records for the description
    block quantgate writes (quantgate.description): the block's SHA-256, or with a key an HMAC
    over it bound to this version. Under a key, a writer who points the tag at a person's quote
    of a block makes a tag that matches nothing, so quantgate writes a new block and the quote
    stays the person's; without one the tag is only as trustworthy as the store's writers."""
    if key is None:
        return block_sha256

    def seal(block: str) -> str:
        payload = {"name": name, "version": str(version), "block_sha256": block_sha256(block)}
        return sign(key, DESCRIPTION_BLOCK, payload)

    return seal
