"""Rebuild data/news9/{train,validation,test}.csv from the hand-written sources.

    python data/news9/build.py          # check the sources, write the splits, print counts
    python data/news9/build.py --check  # check only; exit 1 if the written splits are stale

The sources (``source/*.csv``, columns ``text,label,hard``) are the edited files; the
splits are derived, deterministic (hash of the normalised text) and stratified 70/10/20.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # run as a script from anywhere in the repo

from quantgate.data import (  # noqa: E402
    SPLITS,
    DataError,
    duplicate_groups,
    near_duplicates,
    news9_labels,  # noqa: E402
    stratified_split,
)
from quantgate.data_checks import validate_split  # noqa: E402

LABELS = list(news9_labels())  # news9's own label list: data/news9/labels.txt

MIN_WORDS, MAX_WORDS = 4, 25
NEAR_DUPLICATE_JACCARD = 0.8


def read_sources() -> pd.DataFrame:
    frames = []
    for path in sorted((HERE / "source").glob("*.csv")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        if list(frame.columns) != ["text", "label", "hard"]:
            raise DataError(f"{path}: columns must be text,label,hard; got {list(frame.columns)}")
        validate_split(frame, str(path), LABELS)
        frame["origin"] = [f"{path.name}:{i + 1}" for i in range(len(frame))]
        frames.append(frame)
    if not frames:
        raise DataError(f"no source files in {HERE / 'source'}")
    return pd.concat(frames, ignore_index=True)


def check_sources(frame: pd.DataFrame) -> list[str]:
    problems = []
    for text, origin in zip(frame["text"], frame["origin"]):
        n = len(text.split())
        if not MIN_WORDS <= n <= MAX_WORDS:
            problems.append(f"{origin}: {n} words (need {MIN_WORDS}-{MAX_WORDS}): {text!r}")
    bad_hard = frame[~frame["hard"].isin(["0", "1"])]
    problems += [f"{o}: hard must be 0 or 1" for o in bad_hard["origin"]]
    texts = frame["text"].tolist()
    for group in duplicate_groups(texts):
        problems.append("duplicate: " + " = ".join(frame["origin"][i] for i in group))
    for i, j, score in near_duplicates(texts, NEAR_DUPLICATE_JACCARD):
        problems.append(
            f"near-duplicate (Jaccard {score}): {frame['origin'][i]} {texts[i]!r} ~ {frame['origin'][j]} {texts[j]!r}"
        )
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--check", action="store_true", help="verify only, write nothing")
    args = parser.parse_args()

    frame = read_sources()
    problems = check_sources(frame)
    if problems:
        print(f"{len(problems)} problem(s) in the sources:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    parts = stratified_split(frame[["text", "label"]], labels=LABELS)
    stale = []
    for name in SPLITS:
        out = HERE / f"{name}.csv"
        if args.check:
            if not out.exists() or not pd.read_csv(out, dtype=str, keep_default_na=False).equals(parts[name]):
                stale.append(out.name)
        else:
            parts[name].to_csv(out, index=False)
    counts = pd.DataFrame({n: parts[n]["label"].value_counts() for n in SPLITS}).reindex(list(LABELS))
    counts["total"] = counts.sum(axis=1)
    counts["hard"] = frame[frame["hard"] == "1"]["label"].value_counts().reindex(list(LABELS)).fillna(0).astype(int)
    counts.loc["all"] = counts.sum()
    print(counts.to_string())
    if stale:
        print(f"stale splits (run without --check): {stale}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
