"""The simulator's random frames cover what real HAADF frames of graphene look like.

Uses the real frames in /work/shared/realdata (evaluation only; skipped when absent): for each real
frame, gain- and offset-free statistics (lattice contrast-to-noise per pixel, diffuse fill of the
hexagon centres, Si brightness over the lattice modulation, noise correlation along the scan, line
noise) must fall inside the range of simulated frames drawn over the full parameter ranges at the
same pixel size.
"""

import numpy as np
import pytest

from lab.realdata import REALDATA as REAL
from lab.sim.realism import frame_statistics, real_frames, simulated_statistics

pytestmark = pytest.mark.skipif(not (REAL / "aicr_graphene_si_frames.npz").exists(),
                                reason="real frames not available (/work/shared/realdata)")

_sim_cache: dict = {}


def _sim(px: float) -> dict:
    if px not in _sim_cache:
        _sim_cache[px] = simulated_statistics(px, n=40, seed=5, shape_px=(256, 256))
    return _sim_cache[px]


def _crop256(img: np.ndarray) -> np.ndarray:
    """The central 256 x 256 px (the dopants sit near the centre of the real frames)."""
    h, w = img.shape
    y, x = max(0, (h - 256) // 2), max(0, (w - 256) // 2)
    return img[y:y + 256, x:x + 256]


def _frames():
    return real_frames(REAL) if REAL.exists() else []


@pytest.mark.parametrize("frame", _frames(), ids=lambda f: f["name"])
def test_real_frame_statistics_inside_simulated_range(frame):
    px = round(frame["pixel_size_A"], 2)        # 0.038/0.039 and 0.076/0.078 share a simulated set
    real = frame_statistics(_crop256(frame["image"]), frame["pixel_size_A"], frame["offset"])
    sim = _sim(px)
    keys = ["cnr", "lag_x", "lag_y", "row_excess"]
    if frame["name"] != "G_Si_4fold":           # its raw offset is only known approximately
        keys.append("hollow_to_peak")
    if "Si" in frame["name"]:                   # the simulated frames all hold Si
        keys.append("heavy_contrast")
    outside = {k: (round(real[k], 3), round(float(sim[k].min()), 3), round(float(sim[k].max()), 3))
               for k in keys if not sim[k].min() <= real[k] <= sim[k].max()}
    assert not outside, f"real statistic outside the simulated range (real, sim min, sim max): {outside}"


def test_statistics_separate_clean_and_noisy_frames():
    """The statistics themselves respond to what they claim to measure (dose, diffuse background)."""
    from engine.sim import make_training_example

    def stats(**kw):
        ex = make_training_example(np.random.default_rng(3), (192, 192), 0.08, si_per_nm2=1.0,
                                   contamination=False, adatoms=False, **kw)
        return frame_statistics(ex.image, 0.08, ex.params["imaging"]["offset_counts"])

    fixed = dict(read_noise_counts=0.0, scan_lag=0.0, line_gain_std=0.0, gradient_fraction=0.0, blob_fraction=0.0,
                 row_jitter_A=0.0, line_glitch_prob=0.0, mains_amp_A=0.0, flyback_amp_A=0.0, hot_pixel_prob=0.0)
    lo, hi = stats(dose_range=(3e3, 3e3), **fixed), stats(dose_range=(1e6, 1e6), **fixed)
    assert hi["cnr"] > 5 * lo["cnr"]
    bright = stats(dose_range=(1e6, 1e6), background_fraction=0.05, **fixed)
    dark = stats(dose_range=(1e6, 1e6), background_fraction=0.0, **fixed)
    assert bright["hollow_to_peak"] > dark["hollow_to_peak"] + 0.3
    lag = stats(dose_range=(1e4, 1e4), **{**fixed, "scan_lag": 0.3})
    flat = stats(dose_range=(1e4, 1e4), **fixed)
    assert lag["lag_x"] > flat["lag_x"] + 0.15 and abs(lag["lag_y"] - flat["lag_y"]) < 0.05
