"""main's reuse table (flows/main.py EARLIER_LAYOUT) is keyed by each step's code identity as it
stands now. An edit that changes a step's identity leaves the old key behind, and main then
silently stops reusing runs (or, mapped by hand to the wrong behaviour, reuses runs it should
not). This test makes every such edit a decision: map the new identity to the old ones when the
step behaves the same on every input a finished run can have had; drop the entry when not."""

from __future__ import annotations

import pytest

from flows.main import EARLIER_LAYOUT
from quantgate.code_identity import code_identity


@pytest.mark.parametrize("step", sorted(EARLIER_LAYOUT))
def test_every_reuse_entry_is_keyed_by_the_steps_current_code_identity(step):
    now = code_identity(f"flows.{step}")
    assert list(EARLIER_LAYOUT[step]) == [now], (
        f"flows.{step}'s code identity is now {now}: update EARLIER_LAYOUT in flows/main.py (map it to the "
        "earlier identities if the step behaves the same, or drop the entry)"
    )
