"""Behaviour unchanged: ``analyze`` on the bundled 256x256 recordings gives the stored outputs.

The stored digest (tests/data/analyze_digest.json) is refreshed only on purpose, when a change is
meant to change what the analyzer finds: ``PYTHONPATH=$PWD python -m lab.digest --write`` (see
lab/digest.py and docs/architecture.md). A mismatch lists what differs (counts, events, file hashes).
"""

from __future__ import annotations

import json

from lab.digest import DIGEST_FILE, RECORDINGS, analyze_digests, differences, output_digest


def test_analyze_outputs_match_stored_digest():
    stored = json.loads(DIGEST_FILE.read_text())
    now = analyze_digests()
    assert set(stored) == set(RECORDINGS)
    diffs = differences(stored, now)
    assert not diffs, "analyze outputs changed (refresh on purpose: python -m lab.digest --write):\n" + "\n".join(diffs)


ATOMS_HEAD = "frame,atom_id,x,y,species,coordination,confidence\n"
FRAMES_HEAD = "frame,t_acquired,n_atoms,n_si,n_other,drift_x_A,drift_y_A,error\n"


def _folder(path, atoms: str, events: str, elapsed: float = 1.0, drift: str = "0.0000"):
    path.mkdir()
    (path / "atoms.csv").write_text(ATOMS_HEAD + atoms)
    (path / "frames.csv").write_text(FRAMES_HEAD + f"0,1.0,2,1,0,{drift},0.0000,\n")
    (path / "events.jsonl").write_text(events)
    (path / "summary.json").write_text(json.dumps({"frames": 1, "events": 1, "elapsed_s": elapsed}))
    return output_digest(path)


def test_digest_sees_changed_decisions_but_not_timings_or_last_bits(tmp_path):
    """The digest can fail: a changed species, a dropped event, a moved atom or drift; it ignores
    timings and differences far below a pixel (another CPU's last bits)."""
    atoms = "0,0,1.000,2.000,C,3,0.900\n0,1,5.000,2.000,Si,3,0.800\n"
    ev = '{"frame": 0, "kind": "si_hop", "atom_id": 1, "x": 5.0, "y": 2.0, "confidence": 0.7, "first_frame": 0}\n'
    base = {"r": _folder(tmp_path / "a", atoms, ev)}
    same = {"r": _folder(tmp_path / "b", atoms.replace("1.000", "1.001"), ev.replace("5.0", "5.00001"), elapsed=9.0)}
    assert differences(base, same) == []
    species = {"r": _folder(tmp_path / "c", atoms.replace("C,3", "Si,3"), ev)}
    assert [d.split(":")[1].strip() for d in differences(base, species)] == ["atoms"]
    no_event = differences(base, {"r": _folder(tmp_path / "d", atoms, "")})
    assert any("event_list" in d for d in no_event) and any(": events:" in d for d in no_event)
    moved = {"r": _folder(tmp_path / "e", atoms.replace("1.000", "1.500"), ev)}
    assert [d.split(":")[1].strip() for d in differences(base, moved)] == ["frame_mean_xy_px"]
    drift = {"r": _folder(tmp_path / "f", atoms, ev, drift="0.0100")}
    assert [d.split(":")[1].strip() for d in differences(base, drift)] == ["drift_A"]
