"""quantgate.trt_shapes without a GPU: an engine's I/O names, its optimisation profile, and
batches split and padded to fit it, over a fake engine I/O description."""

from __future__ import annotations

import numpy as np
import pytest

from quantgate.trt_shapes import (
    Profile,
    ShapeRange,
    TensorSpec,
    TrtError,
    check_io,
    check_profile_fits,
    fit_to_profile,
    pad_values_for,
    parse_range,
)

from trt_fakes import PROFILE, SPECS, fake_feed


def test_the_engine_io_must_be_exactly_the_expected_names():
    check_io(SPECS, ["input_ids", "attention_mask", "token_type_ids"])
    with pytest.raises(TrtError, match=r"missing \['token_type_ids'\]"):
        check_io(SPECS[:1] + SPECS[2:], ["input_ids", "attention_mask", "token_type_ids"])
    with pytest.raises(TrtError, match=r"unexpected \['probs'\]"):
        check_io(
            [*SPECS, TensorSpec("probs", "output", "float32", (-1, 9))],
            ["input_ids", "attention_mask", "token_type_ids"],
        )
    with pytest.raises(TrtError, match="mode"):
        TensorSpec("x", "inout", "int32", (-1,))


# --------------------------------------------------------------------------- profiles
def test_profiles_need_min_le_opt_le_max():
    assert parse_range("1, 8,32", "batch") == ShapeRange(1, 8, 32)
    for bad, match in (
        ("8,1,32", "min <= opt <= max"),
        ("1,64,32", "min <= opt <= max"),
        ("0,8,32", "positive"),
        ("1,8", "three values"),
        ("1,x,8", "integers"),
    ):
        with pytest.raises(TrtError, match=match):
            parse_range(bad, "batch")
    with pytest.raises(TrtError, match="different optimisation profiles"):
        Profile.from_engine({"input_ids": ((1, 8), (8, 64), (32, 128)), "attention_mask": ((1, 8), (8, 64), (16, 128))})
    got = Profile.from_engine(
        {"input_ids": ((1, 8), (8, 64), (32, 128)), "attention_mask": ((1, 8), (8, 64), (32, 128))}
    )
    assert got == PROFILE and got.shapes() == ((1, 8), (8, 64), (32, 128))
    with pytest.raises(TrtError, match="below the model's max_length 128"):
        check_profile_fits(Profile(ShapeRange(1, 8, 32), ShapeRange(8, 64, 96)), 128)


def test_batches_are_split_and_padded_to_fit_the_profile_never_cut():
    feed = fake_feed(batch=70, seq=3)
    chunks = fit_to_profile(feed, PROFILE, pad_values_for(0))
    assert [real for _, real in chunks] == [32, 32, 6]
    first, _ = chunks[0]
    assert first["input_ids"].shape == (32, 8)
    assert np.array_equal(first["input_ids"][:, :3], feed["input_ids"][:32])
    assert not first["attention_mask"][:, 3:].any() and not first["input_ids"][:, 3:].any()
    rows = fit_to_profile(
        fake_feed(batch=1, seq=10), Profile(ShapeRange(4, 8, 32), ShapeRange(8, 64, 128)), pad_values_for(0)
    )
    assert rows[0][1] == 1 and rows[0][0]["input_ids"].shape == (4, 10) and not rows[0][0]["attention_mask"][1:].any()
    with pytest.raises(TrtError, match="above the engine's profile max 128"):
        fit_to_profile(fake_feed(seq=129), PROFILE, pad_values_for(0))
