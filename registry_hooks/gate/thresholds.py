"""Promotion thresholds: a YAML file read into frozen, validated dataclasses.

The file holds limits (absolute, and relative to the FP32 parent), how the statistics are
computed, how a champion is chosen among passing variants, and optional per-target sections
(``cpu:``, ``gpu:``) that override any of those for ``promote --target``. Every problem is
reported with the key that caused it (``cpu.max_latency_p95_ms: ...``) before anything runs:
a typo must not silently drop a limit.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from quantgate import contract as c
from quantgate.contract import HOST_KEYS  # noqa: F401  (re-exported for the gate)
from quantgate.errors import UserError
from quantgate.file_trust import replace_problem, store_folders

DEFAULT_THRESHOLDS = Path(__file__).resolve().parent.parent / "thresholds.yaml"  # registry_hooks/thresholds.yaml
TARGETS = ("cpu", "gpu")  # per-target sections; `promote --target cpu` sets alias staging-cpu
DEFAULT_CHAMPION_ORDER = ("latency_p95_ms ASC", "macro_f1 DESC")


class ThresholdError(UserError):
    """A thresholds file that cannot be used; the message starts with the offending key."""


@dataclass(frozen=True)
class Rule:
    """One limit: which thresholds key sets it and which evaluation metric it bounds."""

    key: str  # the thresholds key
    metric: str  # the evaluation metric (point estimate)
    kind: str  # "min" or "max"
    lo: float  # allowed range of the limit itself
    hi: float
    ci: str | None = None  # metric prefix of an interval (<ci>_low, <ci>_high, <ci>_level)

    @property
    def bound_metric(self) -> str:
        """The metric compared with the limit: the interval's pessimistic end when there is one
        (upper bound for a "max" limit, lower bound for a "min" limit), else the point."""
        if self.ci is None:
            return self.metric
        return f"{self.ci}_high" if self.kind == "max" else f"{self.ci}_low"


RULES = (
    Rule("min_macro_f1", c.MACRO_F1, "min", 0.0, 1.0),
    Rule("max_macro_f1_drop_points", c.MACRO_F1_DROP, "max", 0.0, 100.0, ci=f"{c.MACRO_F1_DROP}_ci"),
    Rule("max_worst_class_f1_drop_points", c.WORST_CLASS_F1_DROP, "max", 0.0, 100.0),
    Rule("min_top1_agreement", c.TOP1_AGREEMENT, "min", 0.0, 1.0),
    Rule("max_latency_p95_ms", c.LATENCY_P95, "max", 1e-6, math.inf),
    Rule("max_size_mb", c.SIZE_MB, "max", 1e-6, math.inf),
    Rule("min_speedup", c.SPEEDUP, "min", 1e-6, math.inf, ci="speedup_ci"),
    Rule("min_batch_invariance", c.BATCH_INVARIANCE, "min", 0.0, 1.0),
)
RULES_BY_KEY = {r.key: r for r in RULES}
SETTING_KEYS = ("confidence_level", "bootstrap_resamples", "bootstrap_seed", "champion_order", "host")
KNOWN_KEYS = tuple(RULES_BY_KEY) + SETTING_KEYS
_ORDER_RE = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s+(ASC|DESC)\s*$", re.IGNORECASE)


def _fail(key: str, problem: str) -> ThresholdError:
    exc = ThresholdError(f"{key}: {problem}")
    exc.keyed = True  # the message starts with a key: a section name can be put in front
    return exc


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Thresholds:
    """The limits and settings for one promotion target (what ``decide`` reads).

    A limit left as ``None`` is not checked. ``host`` holds (key, value) pairs the evaluation
    host must match; ``target`` is ``None`` for the default gate (alias ``staging``).
    """

    min_macro_f1: float | None = None
    max_macro_f1_drop_points: float | None = None
    max_worst_class_f1_drop_points: float | None = None
    min_top1_agreement: float | None = None
    max_latency_p95_ms: float | None = None
    max_size_mb: float | None = None
    min_speedup: float | None = None
    min_batch_invariance: float | None = None
    confidence_level: float = 0.95
    bootstrap_resamples: int = 2000
    bootstrap_seed: int = 0
    champion_order: tuple[str, ...] = DEFAULT_CHAMPION_ORDER
    host: tuple[tuple[str, str], ...] = field(default=())
    target: str | None = None

    def __post_init__(self):
        for rule in RULES:
            _check_limit(rule, getattr(self, rule.key))
        if not _is_number(self.confidence_level) or not 0.5 <= self.confidence_level < 1.0:
            raise _fail("confidence_level", f"must be a number in [0.5, 1), got {self.confidence_level!r}")
        if not _is_int(self.bootstrap_resamples) or not 100 <= self.bootstrap_resamples <= 100_000:
            raise _fail(
                "bootstrap_resamples", f"must be a whole number in [100, 100000], got {self.bootstrap_resamples!r}"
            )
        if not _is_int(self.bootstrap_seed) or self.bootstrap_seed < 0:
            raise _fail("bootstrap_seed", f"must be a whole number >= 0, got {self.bootstrap_seed!r}")
        _check_order(self.champion_order)
        for key, _ in self.host:
            if key not in HOST_KEYS:
                raise _fail(f"host.{key}", f"unknown host key; known keys are {sorted(HOST_KEYS)}")
        if self.target is not None and self.target not in TARGETS:
            raise _fail("target", f"must be one of {list(TARGETS)}, got {self.target!r}")
        if not self.active():
            raise ThresholdError(f"no limits set; give at least one of {[r.key for r in RULES]}")

    def active(self) -> list[tuple[Rule, float]]:
        """The limits that are set, in the order of ``RULES``."""
        return [(r, float(getattr(self, r.key))) for r in RULES if getattr(self, r.key) is not None]

    def host_requirements(self) -> dict[str, str]:
        return dict(self.host)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["champion_order"] = list(self.champion_order)
        d["host"] = dict(self.host)
        return d

    def digest(self) -> str:
        """SHA-256 of the effective thresholds: two gates with equal digests judged alike."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()


def _check_limit(rule: Rule, value: object) -> None:
    if value is None:
        return
    if not _is_number(value):
        raise _fail(rule.key, f"must be a number, got {type(value).__name__} {value!r}")
    if math.isnan(value):
        raise _fail(rule.key, "NaN is not a limit")
    if not rule.lo <= value <= rule.hi:
        raise _fail(rule.key, f"{value} is outside the possible range [{rule.lo}, {rule.hi}]")


def _check_order(order: object) -> None:
    if not isinstance(order, tuple) or not order:
        raise _fail("champion_order", f"must be a non-empty list like {list(DEFAULT_CHAMPION_ORDER)}, got {order!r}")
    for item in order:
        if not isinstance(item, str) or not _ORDER_RE.match(item):
            raise _fail("champion_order", f"entries read '<metric> ASC' or '<metric> DESC', got {item!r}")


def parse_order(order: tuple[str, ...]) -> list[tuple[str, bool]]:
    """``("latency_p95_ms ASC", ...)`` -> ``[("latency_p95_ms", False), ...]`` (True = descending)."""
    out = []
    for item in order:
        m = _ORDER_RE.match(item)
        out.append((m.group(1), m.group(2).upper() == "DESC"))
    return out


def _normalise_host(raw: object) -> tuple[tuple[str, str], ...]:
    """YAML ``host:`` mapping -> sorted (key, value) pairs; ``isa`` may be a list of flags."""
    if not isinstance(raw, Mapping) or not raw:
        raise _fail("host", f"must be a non-empty mapping such as {{machine: x86_64, isa: [avx2]}}, got {raw!r}")
    pairs = []
    for key, value in raw.items():
        key = str(key)
        if key not in HOST_KEYS:
            raise _fail(f"host.{key}", f"unknown host key; known keys are {sorted(HOST_KEYS)}")
        if key == "isa" and isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        if value is None or isinstance(value, (bool, Mapping, list, tuple)):
            raise _fail(f"host.{key}", f"must be a text or a number, got {value!r}")
        pairs.append((key, str(value)))
    return tuple(sorted(pairs))


def _section_values(raw: Mapping, *, allow_targets: bool) -> dict:
    """Check one mapping's keys and convert its YAML values to ``Thresholds`` arguments."""
    allowed = set(KNOWN_KEYS) | (set(TARGETS) if allow_targets else set())
    unknown = sorted(set(map(str, raw)) - allowed)
    if unknown:
        raise ThresholdError(f"unknown key(s) {unknown}; known keys are {sorted(allowed)}")
    values = {}
    for key, value in raw.items():
        if key in TARGETS:
            continue
        if value is None:
            raise _fail(key, "no value given; write a value, or delete the line to leave it unset")
        if key == "champion_order":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list):
                raise _fail(key, f"must be a list like {list(DEFAULT_CHAMPION_ORDER)}, got {value!r}")
            value = tuple(value)
        elif key == "host":
            value = _normalise_host(value)
        values[key] = value
    return values


@dataclass(frozen=True)
class GatePolicy:
    """A whole thresholds file: the default thresholds plus any per-target sections."""

    base: Thresholds
    targets: Mapping[str, Thresholds]
    source: str = "thresholds"

    def for_target(self, target: str | None) -> Thresholds:
        """The thresholds for ``promote --target`` (``None``: the default gate)."""
        if target is None:
            return self.base
        if target not in TARGETS:
            raise ThresholdError(f"target: must be one of {list(TARGETS)}, got {target!r}")
        if target not in self.targets:
            raise ThresholdError(
                f"{self.source}: no `{target}:` section, so there are no thresholds for target {target!r}; "
                f"add one (`{target}: {{}}` keeps the limits above)"
            )
        return self.targets[target]


def parse_thresholds(raw: object, origin: str = "thresholds") -> GatePolicy:
    """Validate a parsed YAML document; every error names ``origin`` and the key."""
    if not isinstance(raw, Mapping):
        raise ThresholdError(f"{origin}: expected a mapping of threshold names to values, got {type(raw).__name__}")
    try:
        base_values = _section_values(raw, allow_targets=True)
        base = Thresholds(**base_values)
    except ThresholdError as exc:
        raise ThresholdError(f"{origin}: {exc}") from None
    targets = {}
    for name in TARGETS:
        if name not in raw:
            continue
        section = raw[name] if raw[name] is not None else {}
        try:
            if not isinstance(section, Mapping):
                raise ThresholdError(f"must be a mapping of overrides, got {type(section).__name__}")
            targets[name] = Thresholds(
                **{**base_values, **_section_values(section, allow_targets=False), "target": name}
            )
        except ThresholdError as exc:
            where = f"{name}." if getattr(exc, "keyed", False) else f"{name}: "
            raise ThresholdError(f"{origin}: {where}{exc}") from None
    return GatePolicy(base=base, targets=targets, source=origin)


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names one key twice; plain YAML loaders keep the last value silently."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping, naming it and both lines.
    (A second ``max_size_mb`` must not silently replace the first: that loosened a limit.)"""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # SafeLoader reports unhashable keys itself
                line = key_node.start_mark.line + 1
                if key in first:
                    raise DuplicateKeyError(f"line {line}: duplicate key {key!r} (first given on line {first[key]})")
                first[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml_unique(text: str) -> object:
    """Parse YAML like ``yaml.safe_load``, refusing duplicate keys (``DuplicateKeyError``)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def load_thresholds(path: str | Path = DEFAULT_THRESHOLDS) -> GatePolicy:
    """Read and validate a thresholds file (errors name the file and the key)."""
    path = Path(path)
    try:
        raw = load_yaml_unique(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ThresholdError(f"{path}: cannot read thresholds file: {exc}") from exc
    except DuplicateKeyError as exc:
        raise ThresholdError(f"{path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ThresholdError(f"{path}: not valid YAML: {exc}") from exc
    return parse_thresholds(raw, str(path))


def check_unreplaceable(path: str | Path, tracking_uri: str) -> None:
    """With an evidence key: refuse (``ThresholdError``) a thresholds file a store writer could
    replace (:func:`quantgate.file_trust.replace_problem`); quantgate's bundled default is
    installed code, which the key's threat model leaves to its owner."""
    path = Path(path)
    if Path(os.path.abspath(path)) == DEFAULT_THRESHOLDS:  # as named: a link to it can be re-pointed
        return
    problem = replace_problem(path, store_folders(tracking_uri))
    if problem:
        raise ThresholdError(
            f"{path}: with an evidence key set, the limits must come from a file no store writer can replace, "
            f"and {problem}: keep it in a folder only you can write (e.g. ~/.config/quantgate/)"
        )
