"""Median and percentile of small 1D arrays without numpy's per-call overhead (issue 20).

``np.median`` / ``np.percentile`` cost 30-100 us per call whatever the size (argument handling,
NaN checks, generic ufunc paths); the atom finder and the graph take half a dozen per frame on a
few to a few thousand values. These give the same numbers (tests/test_chem_quantile.py compares
them bit for bit on random float32 and float64 arrays) from one ``np.partition``.
"""

from __future__ import annotations

import numpy as np


def median(x: np.ndarray) -> float:
    """``float(np.median(x))`` of a non-empty 1D array (NaN if it holds a NaN, as numpy)."""
    a = np.asarray(x).ravel()
    n = a.size
    if n == 0 or a.dtype not in (np.float32, np.float64):
        return float(np.median(a))
    k = n // 2
    if n % 2:
        p = np.partition(a, k)
        v = p[k]
        if np.isnan(p).any():
            return float("nan")
        return float(v)
    p = np.partition(a, (k - 1, k))
    if np.isnan(p).any():
        return float("nan")
    lo, hi = p[k - 1], p[k]
    return float((lo + hi) / 2)                 # np.mean of the two in their type, without its ~8 us


def percentile(x: np.ndarray, q: float) -> float:
    """``float(np.percentile(x, q))`` (method "linear") of a non-empty 1D float or integer array."""
    a = np.asarray(x).ravel()
    n = a.size
    if n == 0 or not (a.dtype in (np.float32, np.float64) or (a.dtype.kind in "iu" and a.dtype.itemsize <= 4)):
        return float(np.percentile(a, q))
    v = (n - 1) * (float(q) / 100)                      # numpy's virtual index, in float64
    lo = int(np.floor(v))
    hi = min(lo + 1, n - 1)
    p = np.partition(a, (lo, hi)) if hi != lo else np.partition(a, lo)
    if a.dtype.kind == "f" and np.isnan(p).any():
        return float("nan")
    g = v - lo                                           # a Python float: the array's type is kept
    a0, b0 = p[lo], p[hi]
    diff = b0 - a0
    return float(b0 - diff * (1 - g) if g >= 0.5 else a0 + diff * g)


def nanmedian(x: np.ndarray) -> float:
    """``float(np.nanmedian(x))``: the median of the values that are not NaN (NaN when none is)."""
    a = np.asarray(x).ravel()
    if a.dtype in (np.float32, np.float64):
        a = a[~np.isnan(a)]
        if a.size == 0:
            return float("nan")
        return median(a)
    return float(np.nanmedian(a))


def percentiles(x: np.ndarray, qs) -> tuple[float, ...]:
    """``tuple(float(v) for v in np.percentile(x, qs))`` (method "linear", ``qs`` a sequence) of a
    non-empty float32 or float64 array, from one ``np.partition``; other types go to numpy."""
    a = np.asarray(x).ravel()
    n = a.size
    if n == 0 or a.dtype not in (np.float32, np.float64):
        return tuple(float(v) for v in np.percentile(a, qs))
    v = [(n - 1) * (float(q) / 100) for q in qs]
    lo = [int(np.floor(t)) for t in v]
    hi = [min(k + 1, n - 1) for k in lo]
    p = np.partition(a, sorted(set(lo + hi)))
    if np.isnan(p).any():
        return tuple(float("nan") for _ in qs)
    out = []
    for t, i, j in zip(v, lo, hi):
        g = t - i
        a0, b0 = float(p[i]), float(p[j])
        diff = float(p[j] - p[i])                  # in the array's type, as numpy's lerp; the rest in float64
        out.append(b0 - diff * (1 - g) if g >= 0.5 else a0 + diff * g)
    return tuple(out)
