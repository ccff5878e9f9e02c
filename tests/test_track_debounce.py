"""k-of-n state machines: flickers never change a state, lasting changes do within k-1 frames."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.track import debounce
from engine.track.debounce import UNKNOWN


def run(seq_values, k=3, n=4, H=8, start_state=3):
    """Feed one track's raw values; return the frames where the state changed and the final state."""
    ring = np.full((1, H), UNKNOWN, np.int16)
    state = np.array([start_state], np.int16)
    changes = []
    for t, v in enumerate(seq_values):
        col = t % H
        ring[0, col] = v
        cols = (col - np.arange(n)) % H
        res = debounce.step(ring, state, ring[:, col], cols, k)
        if len(res.rows):
            changes.append((t, int(res.before[0]), int(res.after[0])))
    return changes, int(state[0])


def test_one_frame_flicker_never_changes_state():
    vals = [3] * 10 + [4] + [3] * 10 + [UNKNOWN, 4, 3, 3, 4, 3]
    changes, s = run(vals)
    assert changes == [] and s == 3


def test_lasting_change_confirmed_after_k_frames():
    vals = [3] * 5 + [4] * 6
    changes, s = run(vals)
    assert changes == [(7, 3, 4)] and s == 4        # first 4 at t=5, confirmed at t=5+k-1


def test_change_with_a_missed_frame_in_between():
    vals = [3] * 5 + [4, UNKNOWN, 4, 4]
    changes, _ = run(vals)
    assert changes == [(8, 3, 4)]


def test_unknown_state_is_adopted_without_transition():
    ring = np.full((2, 4), UNKNOWN, np.int16)
    state = np.array([UNKNOWN, UNKNOWN], np.int16)
    for t in range(3):
        ring[:, t] = [4, 3]
        res = debounce.step(ring, state, ring[:, t], (t - np.arange(4)) % 4, 3)
    assert len(res.rows) == 0 and sorted(res.adopted.tolist()) == [0, 1]
    assert state.tolist() == [4, 3]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([3, 4]), min_size=1, max_size=60))
def test_isolated_values_never_fire(vals):
    """A value that never holds 3 of any 4 consecutive frames can never become the state."""
    arr = np.array(vals)
    changes, _ = run(vals)
    for t, _, after in changes:
        window = arr[max(0, t - 3): t + 1]
        assert (window == after).sum() >= 3
