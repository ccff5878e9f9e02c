"""The material verdict inside the pipeline: frames that are not graphene get no atoms, no Si, no
events; results carry the verdict; summary.json counts it; the dashboard status shows it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.analyze import ResultWriter
from engine.pipeline import Pipeline, mask_probabilities
from engine.sim.imaging import ImagingParams
from engine.sim.materials import material_example
from engine.types import Probabilities
from stemwatch.config import Config
from streamer.frame import Frame

PS = 0.1


class CountingInferencer:
    """Records calls; returns a lattice of 'Si' everywhere it is asked (so any analysed frame would
    produce Si): the test is about what the pipeline lets through, not about the network."""

    def __init__(self):
        self.calls = 0

    def predict(self, image, pixel_size_A):
        self.calls += 1
        h, w = np.shape(image)
        p = np.zeros((3, h, w), np.float32)
        p[0] = 1.0
        yy, xx = np.mgrid[0:h, 0:w]
        spots = ((yy % 20) < 3) & ((xx % 20) < 3)
        p[:, spots] = 0.0
        p[2, spots] = 1.0
        return Probabilities(p, float(pixel_size_A), (h, w), float(pixel_size_A))


def _frame(material, seq, seed=0, **kw):
    ip = ImagingParams(dose_e_per_A2=1e5, gain_counts_per_e=1.0, background_fraction=0.005)
    ex = material_example(np.random.default_rng(seed), material, (256, 256), PS, params=ip, **kw)
    return Frame(data=ex.image, series="s", seq=seq, t_acquired=1000.0 + seq, pixel_size_A=PS)


@pytest.fixture()
def pipe():
    p = Pipeline(Config(), inferencer=CountingInferencer(), motifs=None)
    yield p
    p.close()


def test_non_graphene_frames_get_no_atoms_no_si_no_events(pipe):
    for i, material in enumerate(["MoS2", "WS2", "hBN", "amorphous", "vacuum"]):
        r = pipe.process(_frame(material, i, seed=i))
        assert r.error is None
        assert r.material is not None and r.material.verdict != "graphene", (material, r.material.reason)
        assert len(r.chemistry.atoms) == 0 and r.events == [] and len(r.track_ids) == 0
        assert "material" in r.timings_s
    assert pipe.inferencer.calls == 0                     # never even sent to the network


def test_graphene_frames_are_analysed_and_carry_the_verdict(pipe):
    r = pipe.process(_frame("graphene", 0, seed=3, holes=False, contamination=False))
    assert r.material.verdict == "graphene" and pipe.inferencer.calls == 1
    assert len(r.chemistry.atoms) > 0


def test_material_check_can_be_turned_off():
    p = Pipeline(Config().replace(chemistry={"material_check": False}), inferencer=CountingInferencer(), motifs=None)
    r = p.process(_frame("MoS2", 0))
    assert r.material is None and p.inferencer.calls == 1 and len(r.chemistry.atoms) > 0


def test_mask_probabilities_removes_atoms_outside_the_graphene_region():
    inf = CountingInferencer()
    probs = inf.predict(np.zeros((100, 120)), PS)
    mask = np.zeros((100, 120), bool)
    mask[:, :60] = True
    out = mask_probabilities(probs, mask)
    assert out.p[2][:, 60:].max() == 0.0 and out.p[0][:, 60:].min() == 1.0
    assert np.array_equal(out.p[:, :, :60], probs.p[:, :, :60])
    assert np.allclose(out.p.sum(axis=0), 1.0)


def test_summary_counts_frames_by_verdict(tmp_path, pipe):
    w = ResultWriter(tmp_path)
    for i, material in enumerate(["MoS2", "vacuum", "graphene"]):
        w.write(pipe.process(_frame(material, i, seed=i + 10, **({"holes": False} if material == "graphene" else {}))))
    summary = w.summary()
    w.close(summary)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["material"]["frames_by_verdict"] == {"not_graphene": 1, "vacuum": 1, "graphene": 1}
    assert s["material"]["frames_not_graphene"] == 2
    assert any("not graphene" in r for r in s["material"]["reasons"])
    lines = (tmp_path / "frames.csv").read_text().splitlines()
    assert lines[0].endswith(",material") and lines[1].endswith(",not_graphene") and lines[3].endswith(",graphene")


def test_dashboard_status_shows_the_verdict_and_reason():
    from dashboard.status import status_html

    html = status_html({}, {"material": ("not_graphene", "hexagonal lattice a = 3.16 A with 2 sublattices of "
                                         "unequal contrast (0.38): not graphene", 0.0)})
    assert "not_graphene" in html and "a = 3.16 A" in html
    html = status_html({}, {"material": ("graphene", "hexagonal lattice", 0.6)})
    assert "graphene region (60 % of the field)" in html
    assert "material" not in status_html({}, {})


def test_simulate_material_then_analyze_says_not_graphene(tmp_path):
    """`stemwatch simulate --material MoS2` -> `stemwatch analyze`: no atoms, no events, the verdict
    counted in summary.json (the issue's V-doped MoS2 case: once 1,520 'atoms', 331-446 'Si')."""
    import subprocess
    import sys

    rec = tmp_path / "mos2.swrec"
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-m", "stemwatch", "simulate", "--out", str(rec), "--material", "MoS2",
                        "--frames", "3", "--size", "256", "--seed", "4", "-q"], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "an"
    r = subprocess.run([sys.executable, "-m", "stemwatch", "analyze", str(rec), "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["material"]["frames_by_verdict"] == {"not_graphene": 3}
    assert s["atom_rows"] == 0 and s["events"] == 0
    assert "a = 3.1" in s["material"]["reasons"][0]
