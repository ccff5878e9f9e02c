"""A defect's orientation, so that a "rotated" event means the defect really turned.

The orientation of a set of heavy atoms (the Si of a cluster) is measured on the *set* of positions,
not on track identities (identical atoms cannot be told apart, and a tracker may read a rotor step as
one atom jumping across): the pivot is the member nearest the centroid, and the orientation is the
direction from the pivot to the mean of the others (a pair: its axis, period 180; otherwise period 360 degrees: a Si3 cluster's two arms
turned by 120 degrees about the centre Si turn it by 120 degrees). A set whose members balance around
the pivot (first moment < ``MIN_ARM_A``) falls back to its principal axis (period 180 degrees), and
a set with no preferred direction has no orientation (None): it cannot be said to rotate.

Vectorised numpy on a handful of points; angles in degrees, counter-clockwise in the frame's
(x = column, y = row) axes.
"""

from __future__ import annotations

import numpy as np

#: the pivot -> others mean vector must be at least this long (A) to define a direction
MIN_ARM_A = 0.3
#: the principal axis counts only when the larger second moment is this many times the smaller
MIN_ANISOTROPY = 1.5


def orientation(points_A: np.ndarray) -> tuple[float | None, int]:
    """(angle in degrees, period 360 or 180) of a set of >= 2 points; (None, 0) when undefined."""
    p = np.asarray(points_A, np.float64).reshape(-1, 2)
    if len(p) < 2:
        return None, 0
    c = p.mean(0)
    if len(p) == 2:                                # a pair has no pivot: its axis (period 180)
        d = p[1] - p[0]
        return float(np.degrees(np.arctan2(d[1], d[0])) % 180.0), 180
    pivot = int(np.argmin(np.hypot(*(p - c).T)))
    arm = np.delete(p, pivot, axis=0).mean(0) - p[pivot]
    if np.hypot(*arm) >= MIN_ARM_A:
        return float(np.degrees(np.arctan2(arm[1], arm[0])) % 360.0), 360
    d = p - c
    w, v = np.linalg.eigh(d.T @ d)
    if w[1] < MIN_ANISOTROPY * max(w[0], 1e-12):
        return None, 0
    ax = v[:, 1]
    return float(np.degrees(np.arctan2(ax[1], ax[0])) % 180.0), 180


def turn(before_A: np.ndarray, after_A: np.ndarray) -> tuple[float | None, float | None, float]:
    """(angle before, angle after, absolute turn in degrees) between two configurations of one defect.

    The turn is the smallest angle between the two orientations (with the period both share); 0 when
    either is undefined or they are measured differently (then nothing can be said to have turned).
    """
    a0, p0 = orientation(before_A)
    a1, p1 = orientation(after_A)
    if a0 is None or a1 is None or p0 != p1:
        return a0, a1, 0.0
    d = abs((a1 - a0 + p0 / 2) % p0 - p0 / 2)
    return a0, a1, float(d)
