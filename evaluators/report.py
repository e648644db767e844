"""Text a person reads: the model card written into a version's description, and the
comparison table. Pure functions of metrics and tags."""

from __future__ import annotations

import math

from quantgate.printable import shown

CARD_END = "<!-- end quantgate model card -->"  # = quantgate.description.LEGACY_CARD_END


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def model_card(name: str, version: str, tags: dict[str, str], metrics: dict[str, float], host: dict[str, str]) -> str:
    """Markdown for the version description: what it is, what it scored, where it was measured."""
    rows = [
        ("macro F1 (news9 test)", metrics.get("macro_f1")),
        ("accuracy", metrics.get("accuracy")),
        ("size on disk (MB)", metrics.get("size_mb")),
        ("parameters", metrics.get("parameters")),
        (
            "latency p50 / p95 / p99 (ms, batch 1)",
            " / ".join(_fmt(metrics.get(k), 3) for k in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")),
        ),
        ("tokenisation p50 (ms)", metrics.get("tokenise_p50_ms")),
        ("throughput (texts/s, batch 32)", metrics.get("throughput_b32_per_s")),
    ]
    if "top1_agreement" in metrics:
        level = int(round(100 * metrics.get("speedup_ci_level", 0.95)))
        rows += [
            ("parent macro F1", metrics.get("parent_macro_f1")),
            ("F1 drop vs parent (points)", metrics.get("macro_f1_drop_points")),
            ("top-1 agreement with parent", metrics.get("top1_agreement")),
            (
                "max / mean abs Δprob",
                f"{_fmt(metrics.get('max_abs_prob_delta'))} / {_fmt(metrics.get('mean_abs_prob_delta'))}",
            ),
            ("mean KL(parent ‖ this)", metrics.get("mean_kl_divergence")),
            (
                f"speedup vs parent (p50 inference, {level}% CI)",
                f"{_fmt(metrics.get('speedup_vs_parent'), 3)} "
                f"[{_fmt(metrics.get('speedup_ci_low'), 3)}, {_fmt(metrics.get('speedup_ci_high'), 3)}]",
            ),
        ]
    table = "\n".join(f"| {k} | {_fmt(v) if not isinstance(v, str) else v} |" for k, v in rows)
    parent = tags.get("parent_version")
    return (
        f"## {name} v{version}: {tags.get('variant', '?')}\n\n"
        f"precision `{tags.get('precision', '?')}`, runtime "
        f"`{tags.get('runtime', '?')}`, device `{tags.get('device', '?')}`"
        + (f", parent v{parent}" if parent else "")
        + "\n\n"
        + (f"recipe: `{tags['recipe']}`\n\n" if tags.get("recipe") else "")
        + f"| metric | value |\n|---|---|\n{table}\n\n"
        f"Measured on {host.get('host.cpu', '?')} ({host.get('host.isa', '?')}), {host.get('host.cores', '?')} cores, "
        f"{host.get('threads', '?')} threads. Compare figures only between equal hosts.\n{CARD_END}"
    )


def headline_tags(metrics: dict[str, float]) -> dict[str, str]:
    """The few figures a person compares versions by, as short version tags (the registry's
    version list shows tags, not metrics): macro F1, p95 latency, size, speed-up over the parent."""
    fmt = {
        "macro_f1": ("macro_f1", "{:.4f}"),
        "latency_p95_ms": ("p95_ms", "{:.2f}"),
        "size_mb": ("size_mb", "{:.1f}"),
        "speedup_vs_parent": ("speedup", "{:.2f}x"),
    }
    return {
        tag: pattern.format(metrics[key])
        for key, (tag, pattern) in fmt.items()
        if isinstance(metrics.get(key), (int, float)) and math.isfinite(metrics[key])
    }


def compare_table(rows: list[dict]) -> str:
    cols = [
        ("version", "version", 7),
        ("variant", "variant", 20),
        ("size_mb", "MB", 8),
        ("latency_p50_ms", "p50 ms", 8),
        ("latency_p95_ms", "p95 ms", 8),
        ("speedup_vs_parent", "speedup", 8),
        ("macro_f1", "F1", 7),
        ("top1_agreement", "agree", 7),
        ("where", "alias/stage", 20),
    ]
    lines = ["  ".join(f"{title:<{w}}" for _, title, w in cols)]
    for r in rows:
        lines.append(
            "  ".join(
                f"{_fmt(r.get(k), 4) if k not in ('version', 'variant', 'where') else shown(r.get(k, '')):<{w}}"
                for k, _, w in cols
            )
        )
    return "\n".join(lines)
