"""Issue 21, criterion 2: a field partly graphene and partly amorphous carbon is analysed only where it is
graphene. The Fourier mask (engine/health/material_mask.py) leaves amorphous carbon in; the network's own
unsure atoms mark it (engine/health/material_atoms.py)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.health.material_atoms import MIN_UNSURE_ATOMS, unsure_region
from engine.types import Atoms

PX = 0.1
SIDE = 600                       # px: a 60 A field


def _honeycomb(lo_y_A: float, hi_y_A: float) -> np.ndarray:
    """Graphene sites (A) with lo_y_A <= y < hi_y_A over the field's width."""
    a = 2.46
    a1, a2 = np.array([a, 0.0]), np.array([a / 2, a * np.sqrt(3) / 2])
    basis = np.array([[0.0, 0.0], [a / 2, a / (2 * np.sqrt(3))]])
    i, j = np.meshgrid(np.arange(-40, 60), np.arange(-5, 40), indexing="ij")
    cells = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2
    p = (cells[:, None, :] + basis[None]).reshape(-1, 2)
    w = SIDE * PX
    return p[(p[:, 0] >= 0.5) & (p[:, 0] < w - 0.5) & (p[:, 1] >= lo_y_A) & (p[:, 1] < hi_y_A)]


def _atoms(xy_A: np.ndarray, conf: np.ndarray) -> Atoms:
    n = len(xy_A)
    cp = np.zeros((n, 2), np.float32)
    cp[:, 0] = 1.0
    return Atoms(xy_A / PX, np.zeros(n, np.int8), conf.astype(np.float32), cp, np.zeros(n, bool), PX, (SIDE, SIDE))


def _amorphous(rng, lo_y_A: float, hi_y_A: float, density_per_A2: float = 0.3) -> np.ndarray:
    w = SIDE * PX
    n = int(density_per_A2 * w * (hi_y_A - lo_y_A))
    return np.c_[rng.uniform(0.5, w - 0.5, n), rng.uniform(lo_y_A, hi_y_A, n)]


def test_unsure_part_of_the_field_is_left_out_and_the_sure_lattice_kept():
    rng = np.random.default_rng(0)
    lat = _honeycomb(0.5, 36.0)
    amo = _amorphous(rng, 40.0, 59.5)
    xy = np.vstack([lat, amo])
    conf = np.r_[np.full(len(lat), 0.99), rng.uniform(0.45, 0.8, len(amo))]
    region = unsure_region(_atoms(xy, conf), (SIDE, SIDE))
    assert region is not None and region.shape == (SIDE, SIDE)
    at = lambda p: region[np.clip((p[:, 1] / PX).astype(int), 0, SIDE - 1), np.clip((p[:, 0] / PX).astype(int), 0, SIDE - 1)]  # noqa: E731
    assert at(amo).mean() >= 0.95, at(amo).mean()
    # the lattice more than the growth (1.5 A) plus a smoothing length from the patch stays in
    assert not at(lat[lat[:, 1] < 40.0 - 6.0]).any()


def test_a_field_unsure_everywhere_is_no_region():
    """Low dose lowers the confidence of every atom alike: that is the frame's level, not a part of it."""
    lat = _honeycomb(0.5, 59.5)
    conf = np.random.default_rng(1).uniform(0.55, 0.75, len(lat))
    assert unsure_region(_atoms(lat, conf), (SIDE, SIDE)) is None


def test_a_few_unsure_atoms_are_no_region():
    lat = _honeycomb(0.5, 59.5)
    conf = np.full(len(lat), 0.99)
    conf[np.arange(MIN_UNSURE_ATOMS - 1) * 37] = 0.3       # scattered dopant neighbours, edge atoms
    assert unsure_region(_atoms(lat, conf), (SIDE, SIDE)) is None


def test_small_unsure_spot_is_no_region():
    """A defect's few unsure atoms (~15 atoms within 3.4 A) are analysed: below the minimum area."""
    lat = _honeycomb(0.5, 59.5)
    conf = np.full(len(lat), 0.99)
    near = np.hypot(lat[:, 0] - 30.0, lat[:, 1] - 30.0) < 3.4
    conf[near] = 0.4
    assert near.sum() >= MIN_UNSURE_ATOMS
    assert unsure_region(_atoms(lat, conf), (SIDE, SIDE)) is None


@pytest.fixture(scope="module")
def pipe():
    from engine.pipeline import Pipeline
    from stemwatch.config import Config

    p = Pipeline(Config().replace(inference={"backend": "onnx"}))
    yield p
    p.close()


def test_partly_amorphous_field_gets_no_si_in_the_amorphous_part(pipe):
    """Simulated graphene beside amorphous carbon (engine.sim graphene_patch, 0.2 A/px, 1e5 e/A^2): before,
    the amorphous part gave 328 atoms and 82 "Si" (the Fourier mask left it in); now 5 atoms and no Si
    there, and 1451 of the 1452 lattice atoms are still found (lab/material_unsure_eval.py)."""
    from engine.sim.materials import material_example
    from lab.material_unsure_eval import score
    from streamer.frame import Frame

    ex = material_example(np.random.default_rng(3), "graphene_patch", (384, 384), 0.2, dose_range=(1e5, 1e5),
                          other="amorphous")
    pipe.reset()
    r = pipe.process(Frame(data=ex.image, series="patch", seq=0, t_acquired=0.0, pixel_size_A=0.2))
    assert r.material.verdict == "graphene"
    assert r.material.mask is not None and 0.5 < r.material.graphene_fraction < 0.9
    assert "unsure" in r.material.reason
    s = score(r, ex)
    assert s["other_si"] == 0, s
    assert s["other"] <= 15, s
    n_lattice = int(((ex.xy_px[ex.lattice] >= 0) & (ex.xy_px[ex.lattice] <= 383)).all(1).sum())
    assert s["lattice"] >= 0.9 * n_lattice, (s, n_lattice)
