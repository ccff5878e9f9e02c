"""No quadratic pieces in the atoms -> graph -> health path (issue 20): the KD-tree and vectorised
replacements of all-pairs distances and per-pair loops give the same answers as the direct forms."""

from __future__ import annotations

import numpy as np

from engine.chem.atoms import pairs_within
from engine.chem.graph import _greedy_matching, adatom_mask
from engine.health.monitor import _constellation_matches
from engine.types import OTHER


def test_pairs_within_from_a_tree_equals_all_differences():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 60, (3000, 2))
    centres = np.r_[rng.uniform(0, 60, (120, 2)), xy[:5]]
    direct = pairs_within(xy, centres, 2.5, dense_limit=10**9)
    tree = pairs_within(xy, centres, 2.5, dense_limit=0)
    assert len(direct[0]) > 500
    np.testing.assert_array_equal(direct[0], tree[0])
    np.testing.assert_array_equal(direct[1], tree[1])


def test_greedy_matching_equals_visiting_the_pairs_one_by_one():
    rng = np.random.default_rng(2)
    for _ in range(300):
        n = int(rng.integers(2, 40))
        a, b = rng.integers(0, n, (2, int(rng.integers(0, 80))))
        a, b = a[a != b], b[a != b]
        order = np.argsort(rng.integers(0, 6, len(a)).astype(float))      # many ties
        taken, expect = np.zeros(n, bool), []
        for k in order:
            if not (taken[a[k]] or taken[b[k]]):
                taken[a[k]] = taken[b[k]] = True
                expect.append(k)
        np.testing.assert_array_equal(_greedy_matching(n, a, b, order), np.array(expect, np.int64))


def _lattice(nx: int, ny: int) -> np.ndarray:
    a = 1.42
    cells = [(i * 1.5 * a, j * np.sqrt(3) * a + (i % 2) * np.sqrt(3) / 2 * a) for i in range(nx) for j in range(ny)]
    return np.array([(x + dx, y) for x, y in cells for dx in (0.0, a)])


def test_adatom_mask_with_many_heavy_atoms_matches_the_direct_count():
    """Hundreds of "other" atoms (a contaminated frame) over thousands of C: the KD-tree path."""
    rng = np.random.default_rng(3)
    c_xy = _lattice(40, 40)
    others = np.c_[rng.uniform(2, 170, 300), rng.uniform(2, 90, 300)]     # about half off the sheet
    xy = np.r_[c_xy, others]
    sp = np.r_[np.zeros(len(c_xy), np.int8), np.full(len(others), OTHER, np.int8)]
    got = adatom_mask(xy, sp)
    d2 = ((others[:, None, :] - c_xy[None]) ** 2).sum(-1)
    expect = ((d2 < 1.75**2).sum(1) >= 5) | (d2.min(1) < 1.6**2)
    assert got[: len(c_xy)].sum() == 0
    np.testing.assert_array_equal(got[len(c_xy):], expect)
    assert 0 < expect.sum() < len(expect)


def test_constellation_match_among_many_dopants():
    rng = np.random.default_rng(4)
    prev = rng.uniform(0, 200, (400, 2))
    moved = prev[rng.permutation(400)[:300]] + np.array([3.1, -2.2]) + rng.normal(0, 0.1, (300, 2))
    assert _constellation_matches(prev, moved, 5.0, 0.5)
    assert not _constellation_matches(prev, rng.uniform(0, 200, (300, 2)), 5.0, 0.2)


def test_face_labels_by_pointer_jumping_equal_connected_components():
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    from engine.chem.graph import _cycle_labels

    rng = np.random.default_rng(6)
    for _ in range(200):
        n = int(rng.integers(1, 400))
        perm, nxt = rng.permutation(n), np.empty(n, np.int64)
        cuts = sorted(set(rng.integers(0, n, int(rng.integers(0, 6))).tolist()) | {0, n})
        for a, b in zip(cuts[:-1], cuts[1:]):                 # a few long cycles (one outer face)
            nxt[perm[a:b]] = np.roll(perm[a:b], -1)
        g = sparse.csr_matrix((np.ones(n, np.int8), nxt, np.arange(n + 1)), shape=(n, n))
        k, labels = connected_components(g, directed=True, connection="weak")
        k2, labels2 = _cycle_labels(nxt)
        assert k2 == k
        np.testing.assert_array_equal(labels2, labels)
