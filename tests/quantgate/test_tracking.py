"""How a version reference on the command line becomes a models:/ URI."""

from __future__ import annotations

import pytest

from quantgate.errors import UserError
from quantgate.tracking import parse_model_ref


@pytest.mark.parametrize(
    ("ref", "uri"),
    [
        ("3", "models:/news/3"),
        ("@staging", "models:/news@staging"),  # the sixteenth run: --model-name was ignored, "model ''"
        ("other/3", "models:/other/3"),
        ("other@staging", "models:/other@staging"),
        ("models:/x/1", "models:/x/1"),
    ],
)
def test_a_reference_without_a_name_is_in_the_named_model(ref, uri):
    assert parse_model_ref(ref, "news") == uri


@pytest.mark.parametrize("ref", ["abc", ""])
def test_what_names_no_version_is_one_line(ref):
    with pytest.raises(UserError):
        parse_model_ref(ref, "news")
