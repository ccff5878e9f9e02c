"""``make test`` is the same run on every clean clone: its property-based tests draw the same examples
each time (tests/conftest.py, ``HYPOTHESIS_PROFILE``); ``make test-slow`` explores fresh ones."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st


def _draws() -> list:
    seen = []

    @given(st.binary(min_size=1, max_size=64), st.integers(0, 2**31))
    def prop(blob, n):
        seen.append((blob, n))

    prop()
    return seen


def test_the_default_run_draws_the_same_examples_every_time():
    if settings.get_current_profile_name() == "explore":
        pytest.skip("hypothesis profile 'explore' (make test-slow) draws fresh examples by design")
    first, second = _draws(), _draws()
    assert len(first) > 10
    assert first == second
