"""The sparse gated assignment equals the dense optimum of the same birth/death problem."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from engine.track import assign


def _dense_optimum(T, D, ti, dj, cost, death, birth):
    big = 1e9
    M = np.full((T + D, D + T), big)
    M[ti, dj] = cost
    M[np.arange(T), D + np.arange(T)] = death
    M[T + np.arange(D), np.arange(D)] = birth
    M[T + dj, D + ti] = 0.0
    r, c = linear_sum_assignment(M)
    return M[r, c].sum(), {(a, b) for a, b in zip(r, c) if a < T and b < D}


@pytest.mark.parametrize("seed", range(25))
def test_matches_dense_reference(seed):
    rng = np.random.default_rng(seed)
    T, D = rng.integers(1, 30, 2)
    E = rng.integers(1, T * D + 1)
    flat = rng.choice(T * D, E, replace=False)
    ti, dj = flat // D, flat % D
    cost = rng.uniform(0, 3, E)
    death, birth = rng.uniform(0.3, 1.5, 2)
    mt, md = assign.match(T, D, ti, dj, cost, death, birth)
    # a valid one-to-one matching on gated edges
    assert len(set(mt.tolist())) == len(mt) and len(set(md.tolist())) == len(md)
    edges = dict(zip(zip(ti.tolist(), dj.tolist()), cost.tolist()))
    assert all((a, b) in edges for a, b in zip(mt.tolist(), md.tolist()))
    total = sum(edges[(a, b)] for a, b in zip(mt.tolist(), md.tolist()))
    total += death * (T - len(mt)) + birth * (D - len(md))
    ref, _ = _dense_optimum(T, D, ti, dj, cost, death, birth)
    assert total == pytest.approx(ref, abs=1e-4)


def test_nothing_to_match():
    mt, md = assign.match(0, 5, np.zeros(0, int), np.zeros(0, int), np.zeros(0), 1.0, 1.0)
    assert len(mt) == len(md) == 0
    mt, md = assign.match(3, 3, np.array([0]), np.array([1]), np.array([5.0]), 1.0, 1.0)
    assert len(mt) == 0            # dearer than a death plus a birth
    mt, md = assign.match(3, 3, np.array([0]), np.array([1]), np.array([0.0]), 1.0, 1.0)
    assert mt.tolist() == [0] and md.tolist() == [1]   # a zero-cost edge is still an edge
