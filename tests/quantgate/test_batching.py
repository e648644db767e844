"""Length-bucketed batches with a token budget, and the max length chosen from the data."""

from __future__ import annotations

import random

import pytest

from quantgate.batching import bucketed_batches, choose_max_length, padded_tokens


def test_max_length_is_p99_rounded_up_to_8_within_bounds():
    assert choose_max_length([10] * 99 + [40]) == 16  # p99 = 10.3 -> 16 (the floor)
    assert choose_max_length(list(range(1, 101))) == 104  # p99 = 99.01 -> 104
    assert choose_max_length([1000] * 10) == 256
    assert choose_max_length([1000] * 10, cap=126) == 126
    with pytest.raises(ValueError):
        choose_max_length([])


def test_every_item_once_and_the_budget_and_batch_size_hold():
    rng = random.Random(0)
    lengths = [rng.randint(5, 120) for _ in range(500)]
    batches = bucketed_batches(lengths, batch_size=32, max_tokens=1024, max_length=96, rng=random.Random(1))
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        assert len(b) <= 32
        assert len(b) * max(min(lengths[i], 96) for i in b) <= 1024 or len(b) == 1


def test_buckets_pad_far_less_than_random_batches():
    rng = random.Random(0)
    lengths = [rng.choice([8, 12, 20, 60, 120]) for _ in range(640)]
    bucketed = bucketed_batches(lengths, batch_size=32, max_tokens=10**9, max_length=128, rng=random.Random(1))
    order = list(range(640))
    random.Random(2).shuffle(order)
    plain = [order[i : i + 32] for i in range(0, 640, 32)]
    assert padded_tokens(bucketed, lengths, 128) < 0.6 * padded_tokens(plain, lengths, 128)


def test_training_order_changes_with_the_seed_but_evaluation_order_is_fixed():
    lengths = [5, 9, 9, 9, 30, 31, 32, 7] * 8
    a = bucketed_batches(lengths, batch_size=4, max_tokens=64, max_length=64, rng=random.Random(1))
    b = bucketed_batches(lengths, batch_size=4, max_tokens=64, max_length=64, rng=random.Random(2))
    assert a != b
    assert bucketed_batches(lengths, batch_size=4, max_tokens=64, max_length=64) == bucketed_batches(
        lengths, batch_size=4, max_tokens=64, max_length=64
    )
