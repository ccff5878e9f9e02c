"""Vectorised k-of-n debounced state machines over per-track ring buffers.

Every live track writes one raw observation per frame into a column of a ring buffer
(``UNKNOWN`` = -1 when the track was not seen or the quantity does not apply; ``WILD`` = -2 when
it may be either the old or a new value). A machine holds a
debounced ``state`` per track; the state changes to a new value ``v`` only when ``v`` was observed in
at least ``k`` of the last ``n`` frames. From ``UNKNOWN`` the state is *adopted* under the same rule
(adoptions are not transitions). A one-frame flicker (1 of n) can therefore never change a state,
and with ``k <= 3`` a lasting change is confirmed at most ``k - 1`` frames after it first shows
(plus one per missed observation in between).

Shapes: rings are (T, H) int8 with H >= n; ``cols`` are the n ring columns of the current window,
newest first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNKNOWN = -1
#: an observation that may be either: it counts for whichever new value is a candidate but is never
#: a candidate itself (a heavy atom's environment in a frame where a neighbour was missed once)
WILD = -2


@dataclass
class Transitions:
    """What one :func:`step` decided (indices are track rows).

    rows : tracks whose state changed from a known value (transitions, which may become events).
    before, after : (len(rows),) old and new states. count : how many of the last n frames agreed.
    adopted : tracks whose state was UNKNOWN and is now known (no event).
    """

    rows: np.ndarray
    before: np.ndarray
    after: np.ndarray
    count: np.ndarray
    adopted: np.ndarray


def step(ring: np.ndarray, state: np.ndarray, raw: np.ndarray, cols: np.ndarray, k: int,
         rows: np.ndarray | None = None) -> Transitions:
    """Decide transitions after ``raw`` (T,) was written to column ``cols[0]`` of ``ring`` (T, H).

    ``state`` (T,) is updated in place. Only the newest known value of the window is a candidate
    (``raw`` is the column just written, kept for the signature): if it differs from the state and
    appears at least ``k`` times in the window (one ``WILD`` entry may count as one of them), the
    state becomes it. ``rows``: only these tracks can change (default: all).
    """
    sub = np.arange(len(state)) if rows is None else np.asarray(rows, np.int64)
    if not len(sub):
        return Transitions(*(np.zeros(0, np.int64),) * 4, np.zeros(0, np.int64))
    window = ring[sub][:, cols]                            # (R, n), newest first
    # the candidate is the newest known observation (a frame with no information -- not seen,
    # WILD -- neither proposes nor blocks a change)
    has = window >= 0
    newest = np.argmax(has, axis=1)
    cand = np.where(has.any(1), window[np.arange(len(window)), newest], UNKNOWN)
    known = cand >= 0
    diff = known & (cand != state[sub])
    if not diff.any():
        return Transitions(*(np.zeros(0, np.int64),) * 4, np.zeros(0, np.int64))
    loc = np.flatnonzero(diff)
    w = window[loc]
    count = (w == cand[loc, None]).sum(1) + (w == WILD).any(1)      # at most one WILD counts
    fire = count >= k
    loc, count = loc[fire], count[fire]
    out_rows = sub[loc]
    before = state[out_rows].copy()
    after = cand[loc].astype(state.dtype)
    state[out_rows] = after
    adopted = before == UNKNOWN
    return Transitions(out_rows[~adopted], before[~adopted], after[~adopted], count[~adopted], out_rows[adopted])


def first_seen(ring_row: np.ndarray, seqs: np.ndarray, value: int) -> int:
    """The first frame seq of the newest run of ``value`` in a window (UNKNOWN entries do not break a
    run, WILD entries belong to it); -1 if the newest known entry is not ``value``.

    ``ring_row`` (n,) and ``seqs`` (n,) are the window's raw values and frame seqs, newest first.
    """
    first = -1
    for v, s in zip(ring_row.tolist(), seqs.tolist()):
        if s < 0:
            break
        if v == value or (v == WILD and first >= 0):
            first = s
        elif v not in (UNKNOWN, WILD):
            break
    return first
