"""``Inferencer``: frame (any pixel size, any dtype) -> class probabilities on the model grid.

Steps (see :mod:`engine.infer.preprocess`): area-weighted resampling of the frame to the model's
pixel size (the grid covers exactly the frame's field of view), robust normalisation, reflect
padding to the network's multiple, the backend, crop. Grids larger than ``tile_px`` are run in
overlapping tiles whose windows start on the network's pooling grid and whose cores keep at least
the network's receptive radius away from every window edge, so a tiled result equals the
whole-frame result up to float rounding (no seam changes an atom).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

import numpy as np

from engine.infer.model import ModelContract
from engine.infer.preprocess import Resampler, make_tiles, normalise, pad_to_multiple
from engine.types import Probabilities
from stemwatch.config import InferenceConfig

log = logging.getLogger(__name__)


class Inferencer:
    """Runs the shipped (or configured) model through the selected backend.

    >>> with Inferencer(InferenceConfig(backend="onnx")) as inf:          # doctest: +SKIP
    ...     probs = inf.predict(frame, pixel_size_A=0.1)
    ...     probs.p.shape   # (3, h, w) on the model grid

    ``backend`` may be given explicitly (any object with ``run``/``close``/``name``/``description``).
    """

    def __init__(self, cfg: InferenceConfig | None = None, backend=None):
        from engine.infer.probe import select_backend

        self.cfg = cfg or InferenceConfig()
        self.contract = ModelContract.load(self.cfg.model_path)
        if backend is None:
            backend, reason = select_backend(self.cfg.backend, self.cfg, self.contract)
        else:
            reason = f"backend supplied by the caller ({getattr(backend, 'name', type(backend).__name__)})"
        self.backend = backend
        self.selection_reason = reason
        m = self.contract.multiple
        self.multiple = m
        self.min_side_px = int(getattr(backend, "min_side_px", m))
        max_side = int(getattr(backend, "max_side_px", 1 << 30))
        self.tile_px = max(m, min(int(self.cfg.tile_px), max_side) // m * m)
        overlap = max(int(self.cfg.tile_overlap_px), 2 * self.contract.receptive_radius_px)
        self.tile_overlap_px = -(-overlap // m) * m
        if self.tile_overlap_px >= self.tile_px - m:
            raise ValueError(f"tile_px {self.tile_px} too small for an overlap of {self.tile_overlap_px} px")
        self._resamplers: OrderedDict = OrderedDict()
        self.last_timings_s: dict[str, float] = {}
        log.info("inference backend: %s (%s)", self.description, reason)

    # ---------------------------------------------------------------- info
    @property
    def backend_name(self) -> str:
        return str(self.backend.name)

    @property
    def precision(self) -> str:
        """The network's number format on the backend: ``fp32``, ``int8`` (CPU) or ``fp16`` (TensorRT)."""
        return str(getattr(self.backend, "precision", "fp32"))

    @property
    def description(self) -> str:
        return str(self.backend.description)

    @property
    def model_pixel_size_A(self) -> float:
        return self.contract.pixel_size_A

    # ---------------------------------------------------------------- work
    def _resampler(self, shape: tuple[int, int], pixel_size_A: float, model_px_A: float | None = None) -> Resampler:
        model_px_A = float(model_px_A or self.contract.pixel_size_A)
        key = (shape, float(pixel_size_A), model_px_A)
        r = self._resamplers.get(key)
        if r is None:
            r = Resampler(shape, pixel_size_A, model_px_A)
            self._resamplers[key] = r
            while len(self._resamplers) > 8:
                self._resamplers.popitem(last=False)
        else:
            self._resamplers.move_to_end(key)
        return r

    def preprocess(self, image: np.ndarray, pixel_size_A: float,
                   model_pixel_size_A: float | None = None) -> tuple[np.ndarray, Resampler]:
        """Frame -> normalised float32 model-grid image ``(h, w)`` and the resampler used
        (``model_pixel_size_A``: a coarser grid than the model's own, for frames over the grid cap)."""
        img = np.asarray(image)
        if img.ndim != 2 or min(img.shape) < 1:
            raise ValueError(f"expected a 2-D frame (H, W), got shape {img.shape}")
        if img.dtype.kind not in "biuf":
            raise ValueError(f"frame dtype {img.dtype} is not a real number type")
        if not (np.isfinite(pixel_size_A) and pixel_size_A > 0):
            raise ValueError(f"pixel_size_A must be a positive number, got {pixel_size_A!r}")
        r = self._resampler(img.shape, pixel_size_A, model_pixel_size_A)
        if min(r.grid_shape) < 4:
            raise ValueError(f"frame of {img.shape} px at {pixel_size_A} A/px is only {r.grid_shape} px on the "
                             f"model grid ({self.contract.pixel_size_A} A/px): too small to analyse")
        return normalise(r(img), self.contract.normalisation), r

    def run_grid(self, x: np.ndarray) -> np.ndarray:
        """Normalised model-grid image ``(h, w)`` -> probabilities ``(3, h, w)`` float32 (tiled if large)."""
        h, w = x.shape
        if h <= self.tile_px and w <= self.tile_px:
            return self._run_window(x)
        out = np.empty((3, h, w), np.float32)
        for t in make_tiles((h, w), self.tile_px, self.tile_overlap_px, self.multiple):
            p = self._run_window(x[t.y0:t.y1, t.x0:t.x1])
            out[:, t.cy0:t.cy1, t.cx0:t.cx1] = p[:, t.cy0 - t.y0:t.cy1 - t.y0, t.cx0 - t.x0:t.cx1 - t.x0]
        return out

    def _run_window(self, x: np.ndarray) -> np.ndarray:
        h, w = x.shape
        xp, _ = pad_to_multiple(x, self.multiple, self.min_side_px)
        y = self.backend.run(np.ascontiguousarray(xp[None, None], dtype=np.float32))
        if y.shape[:2] != (1, 3) or y.shape[2:] != xp.shape:
            raise RuntimeError(f"backend returned shape {y.shape} for input {xp.shape}")
        return np.ascontiguousarray(y[0, :, :h, :w])

    def predict(self, image: np.ndarray, pixel_size_A: float, model_pixel_size_A: float | None = None) -> Probabilities:
        """Class probabilities for one frame on the model grid covering its field of view.

        ``image``: (H, W) array of any real dtype; ``pixel_size_A``: its angstrom per pixel;
        ``model_pixel_size_A``: the grid's sampling when not the model's own (None), e.g. coarser for a
        frame whose grid would exceed ``HealthConfig.max_model_px`` (engine/health/monitor.py).
        Map positions back to frame pixels with :meth:`Probabilities.to_frame_px`.
        """
        t0 = time.perf_counter()
        x, r = self.preprocess(image, pixel_size_A, model_pixel_size_A)
        t1 = time.perf_counter()
        p = self.run_grid(x)
        t2 = time.perf_counter()
        self.last_timings_s = {"preprocess": t1 - t0, "network": t2 - t1}
        return Probabilities(p=p, pixel_size_A=r.grid_px_A, frame_shape=tuple(np.shape(image)),
                             frame_pixel_size_A=float(pixel_size_A))

    def close(self) -> None:
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
