"""Behaviour unchanged: ``analyze`` on the bundled 256x256 recordings gives the stored outputs.

The stored digest (tests/data/analyze_digest.json) is refreshed only on purpose, when a change is
meant to change what the analyzer finds: ``PYTHONPATH=$PWD python -m lab.digest --write`` (see
lab/digest.py and docs/architecture.md). A mismatch lists what differs (counts, events, file hashes).
"""

from __future__ import annotations

import json
import shutil

from lab.digest import DIGEST_FILE, RECORDINGS, analyze_digests, differences, output_digest


def test_analyze_outputs_match_stored_digest():
    stored = json.loads(DIGEST_FILE.read_text())
    now = analyze_digests()
    assert set(stored) == set(RECORDINGS)
    diffs = differences(stored, now)
    assert not diffs, "analyze outputs changed (refresh on purpose: python -m lab.digest --write):\n" + "\n".join(diffs)


def test_digest_sees_a_changed_output(tmp_path):
    """The digest notices one changed atom row and one dropped event (it can fail)."""
    src = tmp_path / "a"
    src.mkdir()
    (src / "atoms.csv").write_text("frame,atom_id,x,y,species,coordination,confidence\n0,0,1.000,2.000,C,3,0.9\n")
    (src / "frames.csv").write_text("frame,t_acquired\n0,1.0\n")
    (src / "events.jsonl").write_text('{"frame": 3, "kind": "si_hop", "atom_id": 4, "x": 1.00001, "y": 2.0, '
                                      '"confidence": 0.7, "t_acquired": 5.0, "latency_s": 0.4}\n')
    (src / "summary.json").write_text(json.dumps({"frames": 1, "events": 1, "elapsed_s": 1.0}))
    base = output_digest(src)
    other = tmp_path / "b"
    shutil.copytree(src, other)
    (other / "summary.json").write_text(json.dumps({"frames": 1, "events": 1, "elapsed_s": 9.0}))
    assert differences({"r": base}, {"r": output_digest(other)}) == []      # timings are not behaviour
    (other / "atoms.csv").write_text("frame,atom_id,x,y,species,coordination,confidence\n0,0,1.000,2.000,Si,3,0.9\n")
    (other / "events.jsonl").write_text("")
    diffs = differences({"r": base}, {"r": output_digest(other)})
    assert any("atoms_csv" in d for d in diffs) and any("event_list" in d for d in diffs)
