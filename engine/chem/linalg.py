"""Matrix products that stay on the calling thread (issue 20).

numpy's BLAS (OpenBLAS) runs a product on all cores once it is large enough -- a gemm above
65,536 x 4 multiply-adds (m n k), a matrix-vector product above 2,304 x 4 elements (m n) -- and its
worker threads then spin-wait for new work for a while. The products of the atom finder are small
(a few hundred thousand multiply-adds) but cross those thresholds at ~1,000 atoms: on the two
cores the pipeline shares with the network's thread, each frame then woke a second BLAS thread
whose spinning cost more CPU than the product (measured: atoms + graph 2.3x the CPU time). Split
by rows below the thresholds, each product runs on the calling thread; the numbers are the same
(each output row is computed from the same row and column whatever the split).
"""

from __future__ import annotations

import numpy as np

#: rows per call keep m n k (gemm) and m n (gemv) below these (OpenBLAS' thresholds, with margin)
GEMM_MAX_MNK = 200_000
GEMV_MAX_MN = 8_000


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for 2D ``a`` (M, K) and ``b`` (K,) or (K, N), in row blocks small enough for
    OpenBLAS to keep each on the calling thread."""
    m, k = a.shape
    rows = GEMV_MAX_MN // max(k, 1) if b.ndim == 1 else GEMM_MAX_MNK // max(k * b.shape[1], 1)
    rows = max(1, rows)
    if m <= rows:
        return a @ b
    out = np.empty((m,) + b.shape[1:], np.result_type(a, b))
    for s in range(0, m, rows):
        np.matmul(a[s:s + rows], b, out=out[s:s + rows])
    return out
