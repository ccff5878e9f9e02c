"""Global drift between consecutive frames from the atoms themselves (robust point-set matching).

Drift in STEM is one 2-D translation per frame (stage / thermal drift). We estimate it from the
previous frame's atoms and the current frame's atoms, both in angstrom in their own frame's
coordinates:

1. try the *predicted* shift (last frame's drift: drift is smooth); accept it when most of a
   subsample of previous atoms land on a current atom of the same species;
2. otherwise search: candidate shifts are the displacements from a few anchor atoms of the previous
   frame (every heavy atom and a few central C) to every current atom within ``max_shift_A``; each
   candidate is scored on the subsample (species-weighted fraction of atoms that land within
   ``tol_A`` of an atom, counted only where the shifted atom is still inside the current frame) and
   the best one wins (ties: the one closest to the prediction);
3. refine: a least-squares map ``cur = prev + shift + slope * y`` on the matched atoms, re-matched
   a few times (sub-pixel). The slope (per axis) absorbs the slow-scan distortion: the sample
   moves while a frame is scanned, so a frame is sheared along the slow-scan axis by its drift,
   and two frames with different drift differ by a shift that grows with the row. Candidates of
   step 2 are compared after this refinement.

A perfect graphene lattice is periodic: shifts that differ by a lattice vector (2.46 A) match
equally well. Heavy atoms (Si), defects, vacancies and the field edges break that symmetry; the
heavy-atom weight makes the search prefer the shift that keeps dopants on dopants, and temporal
smoothness (the prediction) decides when nothing breaks it.

All arrays are (N, 2) float64 (x, y) in angstrom; species are int8 codes of :data:`engine.types.SPECIES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from engine.types import C

#: Score weight of a heavy (non-C) atom landing on a heavy atom, relative to C on C.
HEAVY_WEIGHT = 10.0
#: candidates this close to the prediction (A) are always refined (translation + slope)
NEAR_PREDICTION_A = 1.5
#: how many of the best translations are refined
TOP_CANDIDATES = 4
#: a heavy atom counts as landing on a heavy atom within this distance (A): a Si sliding 0.7 A into
#: a divacancy still lands; a lattice-periodic wrong shift (>= 1.4 A) does not
HEAVY_TOL_A = 1.0
#: heavy atoms mapped this close to the field edge are not used to judge a shift (A)
EDGE_SKIP_A = 2.0
#: at most this many heavy-atom displacements are refined when every other candidate is an alias
MAX_HEAVY_CANDIDATES = 24


@dataclass
class ShiftEstimate:
    """The estimated map ``cur = prev + shift_A + slope * prev_y`` and how well it is supported.

    shift_A : (2,) float, angstrom. slope : (2,) dimensionless, the change of the shift per angstrom
    of row (y): the slow-scan distortion of drift during a frame differs between frames whose drift
    differs. score : species-weighted matched fraction in [0, 1]. n_matched : atoms used in the
    refinement. searched : True when the prediction was rejected.
    """

    shift_A: np.ndarray
    score: float
    n_matched: int
    searched: bool
    slope: np.ndarray = field(default_factory=lambda: np.zeros(2))


def _subsample(n: int, heavy: np.ndarray, max_light: int) -> np.ndarray:
    """Indices: every heavy atom plus at most ``max_light`` others (an even stride: detections come
    in no particular order, and a stride costs nothing)."""
    idx_heavy = np.flatnonzero(heavy)
    light = np.flatnonzero(~heavy)
    if light.size > max_light:
        light = light[:: -(-light.size // max_light)]
    return np.concatenate([idx_heavy, light])


def _scores(shifts: np.ndarray, prev: np.ndarray, prev_sp: np.ndarray, tree: cKDTree,
            cur_sp: np.ndarray, lo: np.ndarray, hi: np.ndarray, tol_A: float,
            slopes: np.ndarray | None = None) -> np.ndarray:
    """Species-weighted matched fraction for each candidate map ``prev + shift (+ slope * prev_y)``.
    shifts, slopes: (K, 2); prev: (M, 2). Atoms mapped outside the current field do not count."""
    K, M = shifts.shape[0], prev.shape[0]
    q = prev[None, :, :] + shifts[:, None, :]
    if slopes is not None:
        q = q + slopes[:, None, :] * prev[None, :, 1:2]
    q = q.reshape(-1, 2)
    d, j = tree.query(q, k=1, distance_upper_bound=tol_A)
    hit = np.isfinite(d)
    jj = np.where(hit, j, 0)
    sp_p = np.tile(prev_sp, K)
    w_full = np.where(sp_p == C, 1.0, HEAVY_WEIGHT)
    same = hit & (cur_sp[jj] == sp_p)
    # an atom shifted out of the current field cannot match: leave it out of the denominator
    inside = np.all((q >= lo) & (q <= hi), axis=1)
    num = np.where(same & inside, w_full, np.where(hit & inside, 0.25, 0.0)).reshape(K, M).sum(1)
    den = np.where(inside, w_full, 0.0).reshape(K, M).sum(1)
    return np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)


def _heavy_fraction(shift, slope, prev, prev_sp, tree, cur_sp, lo, hi, tol_A) -> float:
    """Fraction of the previous heavy atoms (mapped inside the current field) that land on a heavy
    atom; 1.0 when there are none to judge by."""
    hv = prev_sp != C
    if not hv.any():
        return 1.0
    q = prev[hv] + shift + slope * prev[hv, 1:2]
    # a heavy atom mapped near the field edge may be cut by it (and not found): it does not judge
    inside = np.all((q >= lo + EDGE_SKIP_A) & (q <= hi - EDGE_SKIP_A), axis=1)
    if not inside.any():
        return 1.0
    d, j = tree.query(q[inside], k=1, distance_upper_bound=tol_A)
    hit = np.isfinite(d)
    ok = np.zeros(len(d), bool)
    ok[hit] = cur_sp[j[hit]] != C
    return float(ok.mean())


def refine_affine(prev_A: np.ndarray, prev_sp: np.ndarray, cur_A: np.ndarray, cur_sp: np.ndarray,
                  tree: cKDTree, shift: np.ndarray, slope: np.ndarray, tol_A: float, iters: int = 3):
    """Least-squares ``cur = prev + shift + slope * prev_y`` (per axis) on same-species matches,
    re-matching after each fit so that a translation that fits one band of rows grows into the
    whole frame. Returns (shift, slope, matched fraction, n matched)."""
    shift = np.asarray(shift, float).copy()
    slope = np.asarray(slope, float).copy()
    n = 0
    frac = 0.0
    for _ in range(iters):
        q = prev_A + shift + slope[None, :] * prev_A[:, 1:2]
        d, j = tree.query(q, k=1, distance_upper_bound=tol_A)
        hit = np.isfinite(d)
        hit[hit] &= cur_sp[j[hit]] == prev_sp[hit]
        n = int(hit.sum())
        frac = n / max(1, len(prev_A))
        if n < 8:
            break
        y = prev_A[hit, 1]
        r = cur_A[j[hit]] - prev_A[hit]
        ym = y.mean()
        # least squares on the columns (1, y - ym): orthogonal, so the normal equations are diagonal
        # (np.linalg.lstsq's answer, without its SVD's ~0.1 ms per call)
        yc = y - ym
        syy = float(yc @ yc)
        coef = np.stack([r.mean(0), (yc @ r) / syy if syy > 0 else np.zeros(2)])   # rows intercept, slope
        if np.ptp(y) < 4 * tol_A:                           # too thin a band to see a slope
            coef[1] = 0.0
        new_shift = coef[0] - coef[1] * ym
        change = np.abs(new_shift - shift).max() + np.abs(coef[1] - slope).max() * np.ptp(y)
        slope, shift = coef[1], new_shift
        if change < 0.01:                                   # converged (0.01 A anywhere in the field)
            break
    return shift, slope, frac, n


#: band growing (:func:`grow_bands`): rows of the previous frame are cut into bands this tall (A)
BAND_A = 4.0
#: a band's own translation is searched within this radius (A) of the map extrapolated from the
#: bands fitted so far: below half a C-C bond, so a band cannot lock onto a neighbouring site
BAND_SEARCH_A = 0.6
#: a band fits when this fraction of its atoms lands on an atom of the same species
BAND_FIT = 0.6


def _band_fraction(q: np.ndarray, sp: np.ndarray, tree: cKDTree, cur_sp: np.ndarray, tol_A: float):
    """Same-species hits of the mapped points ``q`` (..., 2): (hit mask, index of the hit)."""
    d, j = tree.query(q, k=1, distance_upper_bound=tol_A)
    hit = np.isfinite(d)
    jj = np.where(hit, j, 0)
    return hit & (cur_sp[jj] == sp), jj


def grow_bands(prev_A: np.ndarray, prev_sp: np.ndarray, cur_A: np.ndarray, cur_sp: np.ndarray,
               tree: cKDTree, shift: np.ndarray, slope: np.ndarray, tol_A: float):
    """Fit ``cur = prev + shift + slope * prev_y`` when the map changes a lot from the top rows to the
    bottom ones (the drift reversed while the frame was scanned: at 2 A/frame the rows scanned before
    the reversal moved +2 A, those after -2 A). A least-squares fit on the matches of a trial map is
    pulled off by rows that land on a *wrong* neighbouring atom (any misregistered atom of graphene
    lands within the tolerance of some atom about one time in five); here the map is grown instead:
    the band of rows that fits the trial map best is the seed; band after band, outwards, each next
    band's translation is searched within :data:`BAND_SEARCH_A` of the map extrapolated from the
    bands fitted so far (no lattice alias so near), and the map is refitted on every fitted band.

    Returns (shift, slope, matched fraction, n matched) like :func:`refine_affine`, or None when no
    band fits the trial map (its matched fraction below :data:`BAND_FIT`).
    """
    y = prev_A[:, 1]
    edges = np.arange(y.min(), y.max() + BAND_A, BAND_A)
    band = np.clip(np.digitize(y, edges) - 1, 0, len(edges) - 1)
    nb = int(band.max()) + 1
    if nb < 3:
        return None
    shift = np.asarray(shift, float).copy()
    slope = np.asarray(slope, float).copy()
    ok, jj = _band_fraction(prev_A + shift + slope * y[:, None], prev_sp, tree, cur_sp, tol_A)
    count = np.bincount(band, minlength=nb)
    frac = np.bincount(band, weights=ok, minlength=nb) / np.maximum(count, 1)
    frac[count < 6] = 0.0
    seed = int(np.argmax(frac))
    if frac[seed] < BAND_FIT:
        return None
    # the search grid around the extrapolated map (0.1 A steps within BAND_SEARCH_A)
    g = np.arange(-BAND_SEARCH_A, BAND_SEARCH_A + 1e-9, 0.1)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    grid = grid[np.hypot(*grid.T) <= BAND_SEARCH_A + 1e-9]
    src = [np.flatnonzero((band == seed) & ok)]
    dst = [jj[src[0]]]
    lo = hi = seed
    for _ in range(nb - 1):
        # the next band: alternately below and above the fitted run (whichever side is left)
        nxt = [b for b in ((hi + 1), (lo - 1)) if 0 <= b < nb]
        if not nxt:
            break
        b = nxt[0] if (hi - seed) <= (seed - lo) or len(nxt) == 1 else nxt[1]
        lo, hi = min(lo, b), max(hi, b)
        m = np.flatnonzero(band == b)
        if len(m) < 6:
            continue
        base = prev_A[m] + shift + slope * y[m, None]
        q = base[None, :, :] + grid[:, None, :]
        okg, jg = _band_fraction(q.reshape(-1, 2), np.tile(prev_sp[m], len(grid)), tree, cur_sp, tol_A)
        okg, jg = okg.reshape(len(grid), len(m)), jg.reshape(len(grid), len(m))
        fr = okg.mean(1)
        best = np.flatnonzero(fr >= fr.max() - 1e-9)
        k = best[np.argmin(np.hypot(*grid[best].T))]
        if fr[k] < BAND_FIT:
            continue                                       # a band that fits nothing (a hole, a defect)
        src.append(m[okg[k]])
        dst.append(jg[k][okg[k]])
        i, j = np.concatenate(src), np.concatenate(dst)
        r = cur_A[j] - prev_A[i]
        yy = prev_A[i, 1]
        if np.ptp(yy) >= 2 * BAND_A:
            ym = yy.mean()
            coef, *_ = np.linalg.lstsq(np.c_[np.ones(len(i)), yy - ym], r, rcond=None)
            slope, shift = coef[1], coef[0] - coef[1] * ym
        else:                                              # two bands: a translation per pair so far
            shift = (r - slope * yy[:, None]).mean(0)
    return refine_affine(prev_A, prev_sp, cur_A, cur_sp, tree, shift, slope, tol_A, iters=2)


def estimate_shift(prev_A: np.ndarray, prev_sp: np.ndarray, cur_A: np.ndarray, cur_sp: np.ndarray,
                   predicted_A: np.ndarray, max_shift_A: float, tol_A: float = 0.4,
                   cur_tree: cKDTree | None = None, accept_score: float = 0.7,
                   subsample: int = 256, refine_max: int = 600) -> ShiftEstimate:
    """Estimate the global shift taking ``prev_A`` onto ``cur_A`` (see the module docstring).

    prev_A, cur_A : (N, 2), (M, 2) angstrom; prev_sp, cur_sp : species codes.
    predicted_A : (2,) the expected shift (e.g. the last drift). max_shift_A : search radius.
    tol_A : match tolerance (about half the C-C bond or less). cur_tree : a cKDTree on ``cur_A``
    (built if None). Returns a :class:`ShiftEstimate`; with fewer than 3 atoms on either side the
    prediction is returned unchanged with score 0.
    """
    predicted_A = np.asarray(predicted_A, dtype=np.float64).reshape(2)
    if len(prev_A) < 3 or len(cur_A) < 3:
        return ShiftEstimate(predicted_A.copy(), 0.0, 0, False)
    tree = cur_tree if cur_tree is not None else cKDTree(cur_A)
    lo = cur_A.min(0) - tol_A
    hi = cur_A.max(0) + tol_A
    heavy = prev_sp != C
    sub = _subsample(len(prev_A), heavy, subsample)
    p_sub, sp_sub = prev_A[sub], prev_sp[sub]

    zero = np.zeros(2)

    def score_of(sh, sl):
        return float(_scores(sh[None], p_sub, sp_sub, tree, cur_sp, lo, hi, tol_A, sl[None])[0])

    def refined(shift0):
        sh, sl, _, _ = refine_affine(p_sub, sp_sub, cur_A, cur_sp, tree, shift0, zero, tol_A)
        sc = score_of(sh, sl)
        if sc < accept_score:
            # the map may change from the top rows to the bottom ones more than a least-squares fit
            # on one trial map follows (a drift reversal during the frame): grow it band by band
            g = grow_bands(p_sub, sp_sub, cur_A, cur_sp, tree, shift0, zero, tol_A)
            if g is not None:
                gsc = score_of(g[0], g[1])
                if gsc > sc:
                    sh, sl, sc = g[0], g[1], gsc
        return sh, sl, sc

    # the prediction as it is (one query), then -- if that fails -- refined with a slope
    shift, slope = predicted_A, zero
    score = float(_scores(shift[None], p_sub, sp_sub, tree, cur_sp, lo, hi, tol_A)[0])
    if score < accept_score:
        shift, slope, score = refined(predicted_A)
    searched = False
    # the lattice repeats every 2.46 A: a wrong prediction can still put most C on C. Heavy atoms
    # are not periodic, so the prediction is accepted only if they land on heavy atoms too
    heavy_ok = _heavy_fraction(shift, slope, p_sub, sp_sub, tree, cur_sp, lo, hi, HEAVY_TOL_A) >= 0.5
    if score < accept_score or not heavy_ok:
        searched = True
        cands = [predicted_A[None]]
        # anchors: every heavy atom, plus the few C nearest the centre of the previous field
        centre = prev_A.mean(0)
        n_light = 6
        light_idx = np.flatnonzero(~heavy)
        if light_idx.size:
            dc = np.linalg.norm(prev_A[light_idx] - centre, axis=1)
            light_idx = light_idx[np.argsort(dc)[:n_light]]
        anchors = np.concatenate([np.flatnonzero(heavy)[:32], light_idx])
        # candidate shifts: within max_shift_A of no drift at all (a wrong prediction must not
        # keep the search away from the truth), and around the prediction when it lies beyond
        near_r = max(NEAR_PREDICTION_A, 0.6 * max_shift_A)
        centres = [(np.zeros(2), max_shift_A)]
        if np.linalg.norm(predicted_A) > max_shift_A - near_r:
            centres.append((predicted_A, near_r))
        heavy_cands = []                                 # displacements heavy atom -> heavy atom
        for c, r in centres:
            near = tree.query_ball_point(prev_A[anchors] + c, r + tol_A)
            for a, js in zip(anchors, near):
                if not js:
                    continue
                js = np.asarray(js)
                if heavy[a]:
                    js = js[cur_sp[js] == prev_sp[a]]
                    heavy_cands.append(cur_A[js] - prev_A[a])
                cands.append(cur_A[js] - prev_A[a])
        cand = np.concatenate(cands)
        cand = cand[(np.linalg.norm(cand, axis=1) <= max_shift_A + tol_A)
                    | (np.linalg.norm(cand - predicted_A, axis=1) <= near_r + tol_A)]
        if len(cand):
            cand = np.unique(np.round(cand / 0.05) * 0.05, axis=0)
            sc = _scores(cand, p_sub, sp_sub, tree, cur_sp, lo, hi, tol_A)
            # the best translations, and the ones near the prediction (where a change of the
            # slow-scan distortion makes a pure translation fit only a band of rows), are refined
            near_pred = np.linalg.norm(cand - predicted_A, axis=1) <= near_r
            top = np.argsort(-sc)[:TOP_CANDIDATES]
            near_top = np.flatnonzero(near_pred)[np.argsort(-sc[near_pred])[:2 * TOP_CANDIDATES]]
            pick = np.unique(np.concatenate([top, near_top]))
            res = [refined(cand[i]) for i in pick]
            hfr = [_heavy_fraction(r[0], r[1], p_sub, sp_sub, tree, cur_sp, lo, hi, HEAVY_TOL_A) for r in res]
            if heavy_cands and max(hfr) < 0.5:
                # every refined map puts the dopants off dopants: lattice aliases. When the field is
                # strongly sheared (the drift reversed in a frame that was skipped, 4 A from the top
                # rows to the bottom ones), a pure translation fits only a band of rows and the best
                # bands are aliases; a heavy atom's own displacement onto a heavy atom is right for
                # its row, so those are refined too (rare: only when everything else failed)
                hc = np.unique(np.round(np.concatenate(heavy_cands) / 0.05) * 0.05, axis=0)
                hc = hc[(np.linalg.norm(hc, axis=1) <= max_shift_A + tol_A)
                        | (np.linalg.norm(hc - predicted_A, axis=1) <= near_r + tol_A)]
                hc = hc[np.argsort(-_scores(hc, p_sub, sp_sub, tree, cur_sp, lo, hi, tol_A))[:MAX_HEAVY_CANDIDATES]]
                more = [refined(c) for c in hc]
                res += more
                hfr += [_heavy_fraction(r[0], r[1], p_sub, sp_sub, tree, cur_sp, lo, hi, HEAVY_TOL_A) for r in more]
            hfr = np.array(hfr)
            rsc = np.array([r[2] for r in res])
            dist = np.array([np.linalg.norm(r[0] - predicted_A) for r in res])
            # drift changes slowly: a good map near the prediction beats a (lattice-periodic) one
            # far from it; only when none fits nearby does the best anywhere win
            good_near = (rsc >= accept_score) & (hfr >= 0.5) & (dist <= near_r)
            pool = np.flatnonzero(good_near) if good_near.any() else np.arange(len(res))
            best = rsc[pool].max()
            ok = pool[rsc[pool] >= best - 0.02]          # near-best: the one closest to the prediction
            k = ok[np.argmin(dist[ok])]
            if rsc[k] > score or good_near.any():
                shift, slope, score = res[k]

    # final fit on up to ``refine_max`` atoms (least squares on 600 displacements with 0.07 A
    # scatter is good to ~0.003 A), then once more on the close inliers only
    if len(prev_A) > refine_max:
        ref = np.arange(0, len(prev_A), -(-len(prev_A) // refine_max))
        p_ref, sp_ref = prev_A[ref], prev_sp[ref]
    else:
        p_ref, sp_ref = prev_A, prev_sp
    shift, slope, _, n_used = refine_affine(p_ref, sp_ref, cur_A, cur_sp, tree, shift, slope, tol_A,
                                            iters=2 if searched else 1)
    if n_used >= 8:
        shift, slope, _, n_used = refine_affine(p_ref, sp_ref, cur_A, cur_sp, tree, shift, slope, 0.5 * tol_A,
                                                iters=1)
    return ShiftEstimate(np.asarray(shift, dtype=np.float64), score, n_used, searched, np.asarray(slope, float))
