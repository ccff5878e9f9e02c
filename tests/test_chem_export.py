"""CSV / JSON export (engine.chem.export) and the analyze() entry point, on real files."""

from __future__ import annotations

import csv
import json

import numpy as np

from engine.chem import analyze
from engine.chem.export import ATOM_COLUMNS, atoms_to_csv, chemistry_to_json
from engine.chem.reference import defect_field
from lab.chem.synth import grid_for, render_probabilities
from stemwatch.config import ChemistryConfig

CFG = ChemistryConfig()


def _chem():
    rng = np.random.default_rng(21)
    s = defect_field(40, 40, ["Si-3fold", "Si-4fold", "vacancy"], rng, min_spacing_A=11, margin_A=8)
    frame_px = 0.1
    shape = grid_for(s.xy_A, 0.2, 1.0)
    probs = render_probabilities(s.xy_A, s.species, shape, 0.2, sigma_A=0.3, rng=rng,
                                 frame_shape=(shape[0] * 2, shape[1] * 2), frame_pixel_size_A=frame_px)
    return s, analyze(probs, CFG)


def test_atoms_csv_round_trip(tmp_path):
    s, chem = _chem()
    path = tmp_path / "atoms.csv"
    text = atoms_to_csv(chem, path, frame=7)
    assert path.read_text() == text
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["frame", *ATOM_COLUMNS]
    assert len(rows) == len(chem.atoms)
    x = np.array([float(r["x"]) for r in rows])
    xa = np.array([float(r["x_A"]) for r in rows])
    assert np.allclose(x, chem.atoms.xy_px[:, 0], atol=1e-3)
    assert np.allclose(xa, x * 0.1, atol=1e-3)
    assert {r["species"] for r in rows} == {"C", "Si"}
    assert [int(r["coordination"]) for r in rows] == chem.coordination.tolist()
    assert all(r["frame"] == "7" for r in rows)
    si = [r for r in rows if r["species"] == "Si"]
    assert sorted(int(r["coordination"]) for r in si) == [3, 4]


def test_chemistry_json(tmp_path):
    s, chem = _chem()
    path = tmp_path / "chem.json"
    out = chemistry_to_json(chem, path, frame=3)
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(out))
    assert data["n_atoms"] == len(chem.atoms) and data["frame"] == 3
    assert len(data["bonds"]["i"]) == len(chem.bonds)
    assert data["rings"]["6"] > 100
    kinds = sorted((d["kind"], d["formula"]) for d in data["defects"])
    assert kinds == [("Si-3fold", "Si1C3"), ("Si-4fold", "Si1C4"), ("vacancy", "V1")]
    si4 = next(d for d in data["defects"] if d["kind"] == "Si-4fold")
    assert len(si4["heavy_bond_lengths_A"]) == 4 and len(si4["heavy_bond_angles_deg"]) == 4
    assert all(1.7 < b < 2.1 for b in si4["heavy_bond_lengths_A"])
    truth = next(lab for lab in s.labels if lab["kind"] == "Si-4fold")["centre_A"]
    assert np.hypot(*(np.array(si4["centre_A"]) - truth)) < 0.1
    assert abs(si4["centre_px"][0] * 0.1 - si4["centre_A"][0]) < 1e-3


def test_bare_atoms_csv():
    _, chem = _chem()
    text = atoms_to_csv(chem.atoms)
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == len(chem.atoms) and rows[0]["coordination"] == "-1"
