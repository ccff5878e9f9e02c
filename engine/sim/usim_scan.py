"""stemwatch's graphene + Si sample rendered for Nion's simulated microscope (nionswift-usim).

usim's own samples (a flake, amorphous carbon, gold balls on carbon) have no atomic lattice, and
usim has no setting to load another sample. Its scan device asks one object for every frame: the
instrument's ``scan_data_generator``, through ``generate_scan_data(instrument, scan_frame_parameters)``
(the ``ScanDataGeneratorLike`` protocol of ``nion.device_kit.ScanDevice``), which returns the
(H, W) float32 frame. :func:`install` points that call at :class:`LatticeScanData`, which renders a
fixed graphene sheet with a 3-fold and a 4-fold Si (:mod:`engine.sim.structures`) with stemwatch's
HAADF model (:func:`engine.sim.imaging.render`) at the field of view, centre and size the scan asks
for. Everything else (frame timing, channels, calibration, metadata, Swift's events) is usim's own.

Not modelled: scan rotation, usim's stage/drift offsets, dwell-time dependent dose (the dose is
fixed, ``dose_e_per_A2``). Nothing here imports Nion: the parameters are read by attribute name.
"""

from __future__ import annotations

import threading

import numpy as np

from engine.sim import structures as st
from engine.sim.imaging import render
from engine.sim.movie import default_imaging


class LatticeScanData:
    """A graphene sheet ``extent_A`` wide (origin at its centre) with a 3-fold Si at ``si3_A`` and a
    4-fold Si at ``si4_A`` (sample coordinates, A, relative to the centre); frames rendered with
    :func:`default_imaging` at ``dose_e_per_A2`` and shot noise from ``seed``."""

    def __init__(self, extent_A: float = 60.0, si3_A=(-4.0, -3.0), si4_A=(5.0, 4.0), rotation_deg: float = 7.0,
                 dose_e_per_A2: float = 1e5, seed: int = 0):
        self.extent_A = float(extent_A)
        s = st.graphene((self.extent_A, self.extent_A), rotation_deg=rotation_deg)
        c = np.array([self.extent_A / 2, self.extent_A / 2])
        st.add_si3(s, s.nearest(c + np.asarray(si3_A, float)))
        st.add_si4(s, s.nearest(c + np.asarray(si4_A, float)))
        s.xy_A = s.xy_A - c                       # sample centre at (0, 0)
        self.sample = s
        self.params = default_imaging(dose_e_per_A2)
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self.frames_rendered = 0

    @staticmethod
    def geometry(scan_frame_parameters) -> tuple[tuple[int, int], float, tuple[float, float]]:
        """((H, W), pixel size A/px, scan centre (x, y) in A) of a usim ``ScanFrameParameters``."""
        p = scan_frame_parameters
        size = p.size
        h, w = int(size.height), int(size.width)
        fov = getattr(p, "fov_size_nm", None)
        fov_w_nm = float(fov.width) if fov is not None else float(p.fov_nm)
        centre = getattr(p, "center_nm", None)
        cx, cy = (float(centre.x) * 10.0, float(centre.y) * 10.0) if centre is not None else (0.0, 0.0)
        return (h, w), fov_w_nm * 10.0 / w, (cx, cy)

    def origin_A(self, shape: tuple[int, int], pixel_size_A: float, centre_A=(0.0, 0.0)) -> np.ndarray:
        """Sample coordinate (A) at the centre of pixel (0, 0) for a frame of ``shape`` centred at ``centre_A``."""
        h, w = shape
        return np.array([centre_A[0] - (w - 1) / 2 * pixel_size_A, centre_A[1] - (h - 1) / 2 * pixel_size_A])

    def si_positions_px(self, shape: tuple[int, int], pixel_size_A: float, centre_A=(0.0, 0.0)) -> dict:
        """Where the Si atoms appear in such a frame: {"si3": (x, y) px, "si4": (x, y) px}."""
        o = self.origin_A(shape, pixel_size_A, centre_A)
        out = {}
        for lab in ("si3", "si4"):
            i = np.flatnonzero(self.sample.label == st.LABEL[lab])
            if len(i):
                out[lab] = tuple((self.sample.xy_A[i[0]] - o) / pixel_size_A)
        return out

    def generate_scan_data(self, instrument, scan_frame_parameters) -> np.ndarray:
        """usim's hook: the (H, W) float32 frame for these scan parameters (``instrument`` unused)."""
        shape, px, centre = self.geometry(scan_frame_parameters)
        with self._lock:
            img, _ = render(self.sample, self.params, shape, px, self._rng, origin_A=tuple(self.origin_A(shape, px, centre)))
            self.frames_rendered += 1
        return img.astype(np.float32, copy=False)


def install(instrument, source: LatticeScanData) -> None:
    """Make usim's scan render ``source``: its instrument's scan data generator gets ``source``'s
    ``generate_scan_data`` (usim calls that attribute for every frame; there is no other hook)."""
    instrument.scan_data_generator.generate_scan_data = source.generate_scan_data
