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


def test_all_versions_reads_every_page(tmp_path):
    """A search returns one page (10,000 versions at most); a writer who registers more would hide
    the rest from whoever reads one page (the thirty-ninth adversarial run's note)."""
    from mlflow import MlflowClient

    from quantgate.tracking import all_versions

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m")
    for _ in range(5):
        client.create_model_version("m", str(tmp_path))
    assert len(client.search_model_versions("name='m'", max_results=2)) == 2
    assert sorted(int(mv.version) for mv in all_versions(client, "name='m'", page_size=2)) == [1, 2, 3, 4, 5]
