"""Training batches that waste little compute on padding: dynamic padding, length buckets and a
token budget per batch, and a max length chosen from the data. Pure functions over lengths."""

from __future__ import annotations

import math
import random

import numpy as np


def choose_max_length(
    lengths: list[int], *, percentile: float = 99.0, multiple: int = 8, floor: int = 16, cap: int = 256
) -> int:
    """The ``percentile`` of the token lengths, rounded up to a multiple of ``multiple``, within
    [floor, cap]: long enough for nearly every text, short enough not to pay for outliers."""
    if not lengths:
        raise ValueError("no lengths to choose a max length from")
    p = float(np.percentile(np.asarray(lengths), percentile))
    return int(min(cap, max(floor, multiple * math.ceil(p / multiple))))


def bucketed_batches(
    lengths: list[int], *, batch_size: int, max_tokens: int, max_length: int, rng: random.Random | None = None
) -> list[list[int]]:
    """Index batches of similar length. Items are ordered by (truncated) length - with random
    tie-breaks and in random order of batches when ``rng`` is given (training) - and cut into
    batches of at most ``batch_size`` items whose padded size (items x longest) stays within
    ``max_tokens``. Every index appears exactly once."""
    if batch_size < 1 or max_tokens < 1:
        raise ValueError("batch_size and max_tokens must be >= 1")
    clipped = [min(n, max_length) for n in lengths]
    jitter = [rng.random() for _ in clipped] if rng else [0.0] * len(clipped)
    order = sorted(range(len(clipped)), key=lambda i: (clipped[i], jitter[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:  # ascending length: the newest item is the longest in its batch
        if current and (len(current) >= batch_size or (len(current) + 1) * clipped[i] > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    if rng:
        rng.shuffle(batches)
    return batches


def padded_tokens(batches: list[list[int]], lengths: list[int], max_length: int) -> int:
    """Token slots the batches fill once padded to their longest item (what the model computes)."""
    return sum(len(b) * max(min(lengths[i], max_length) for i in b) for b in batches)
