"""Motif signatures and the motif library (engine.chem.motifs)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.chem import MotifLibrary
from engine.chem.chemistry import chemistry_from_positions
from engine.chem.motifs import KNOWN_NAMES
from engine.chem.reference import add_si3, add_vacancy, defect_field, graphene, single_defect
from stemwatch.config import ChemistryConfig

CFG = ChemistryConfig()


def rotate(xy, deg, centre=(0.0, 0.0)):
    t = np.deg2rad(deg)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return (xy - centre) @ r.T + centre


def sigs(xy, sp, lib=None):
    chem = chemistry_from_positions(xy, sp, CFG, motifs=lib)
    # (rotated squares have corners the bounding box calls interior: ignore their "edge" regions)
    return chem, {d.kind: d.signature for d in chem.defects if d.kind != "edge"}


@pytest.fixture(scope="module")
def library():
    return MotifLibrary()


def test_signature_invariant_to_rotation_translation_order_and_jitter():
    rng = np.random.default_rng(1)
    s = defect_field(50, 50, ["Si-3fold", "Si-4fold", "Stone-Wales", "vacancy"], rng, min_spacing_A=12,
                     margin_A=9)
    _, ref = sigs(s.xy_A, s.species)
    assert len(ref) == 4 and all(ref.values())
    perm = rng.permutation(len(s.species))
    xy = rotate(s.xy_A, 33.0, (25, 25)) + [40.0, 40.0] + rng.normal(0, 0.04, s.xy_A.shape)
    _, got = sigs(xy[perm], s.species[perm])
    assert got == ref


def test_different_environments_have_different_signatures():
    out = {}
    for kind in KNOWN_NAMES:
        s = single_defect(kind)
        _, sg = sigs(s.xy_A, s.species)
        out[kind] = next(iter(sg.values()))
    assert len(set(out.values())) == len(out)
    # a Si next to a vacancy is not a plain Si1C3
    s = graphene(28, 28)
    i = s.nearest(14, 14)
    add_si3(s, i)
    far = [k for k in range(len(s.species)) if 2.0 < np.hypot(*(s.xy_A[k] - s.xy_A[i])) < 3.0][0]
    add_vacancy(s, far)
    _, sg = sigs(s.xy_A, s.species)
    assert sg.get("Si-3fold") not in (None, out["Si-3fold"])


def test_known_motifs_are_named(library):
    for kind, name in KNOWN_NAMES.items():
        s = single_defect(kind, size_A=30.0, rotation_deg=12.0)
        chem, _ = sigs(s.xy_A + 5.0, s.species, library)
        assert [d.motif for d in chem.defects] == [name]
    assert library.new_motifs() == []


def test_new_motifs_are_grouped_counted_and_named_by_the_operator(tmp_path):
    path = tmp_path / "motifs.json"
    lib = MotifLibrary(path)
    # a 5-7 pair (dislocation core) is in no training set: make one by removing a SW's one side
    s = graphene(30, 30)
    add_si3(s, s.nearest(15, 15))
    add_vacancy(s, [k for k in range(len(s.species)) if 2.0 < np.hypot(*(s.xy_A[k] - [15, 15])) < 3.0][0])
    new_names = set()
    for frame in range(3):
        xy = rotate(s.xy_A, 20.0 * frame, (15, 15)) + frame
        chem = chemistry_from_positions(xy, s.species, CFG)
        assert sorted(d.kind for d in chem.defects if d.kind != "edge") == ["Si-3fold", "vacancy"]
        first = lib.observe(chem.defects, pixel_size_A=0.1, frame=frame)
        assert len(first) == (2 if frame == 0 else 0)      # the Si and the vacancy: both unseen
        new_names |= {d.motif for d in chem.defects if d.kind != "edge"}
    assert new_names == {"new motif 1", "new motif 2"}
    recs = lib.new_motifs()
    assert [r["count"] for r in recs] == [3, 3] and all(r["frames"] == 3 for r in recs)
    rec = next(r for r in recs if r["kind"] == "Si-3fold")
    vac_name = next(r["name"] for r in recs if r["kind"] == "vacancy")
    assert len(rec["examples"]) == 3 and rec["examples"][0][4] == 0          # x, y px, x, y A, frame
    lib.name(rec["signature"], "Si1C3 + vacancy")
    with pytest.raises(ValueError):
        lib.name(rec["signature"], "  ")
    lib.save()
    data = json.loads(path.read_text())
    assert data["names"] == {rec["signature"]: "Si1C3 + vacancy"}
    # next session: the name is used
    lib2 = MotifLibrary(path)
    chem = chemistry_from_positions(s.xy_A, s.species, CFG, motifs=lib2)
    assert sorted(d.motif for d in chem.defects) == sorted(["Si1C3 + vacancy", vac_name])
    assert [r["name"] for r in lib2.new_motifs()] == [vac_name]
    # a third unseen motif gets the next number
    s2 = graphene(30, 30)
    i = s2.nearest(15, 15)
    second = [k for k in range(len(s2.species)) if 2.3 < np.hypot(*(s2.xy_A[k] - s2.xy_A[i])) < 2.6][0]
    add_vacancy(s2, max(i, second))
    add_vacancy(s2, min(i, second))                      # two vacancies on second-neighbour sites
    lib2.observe(chemistry_from_positions(s2.xy_A, s2.species, CFG).defects)
    assert "new motif 3" in {r["name"] for r in lib2.new_motifs()}


def test_library_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        MotifLibrary(bad)
    other = tmp_path / "radius.json"
    other.write_text(json.dumps({"version": 1, "radius": 5, "names": {}, "new": {}}))
    with pytest.raises(ValueError, match="motif_radius_bonds"):
        MotifLibrary(other)
    with pytest.raises(ValueError, match="path"):
        MotifLibrary().save()


def test_defects_at_the_frame_edge_get_no_signature():
    s = graphene(30, 30)
    add_si3(s, s.nearest(1.5, 15))
    chem = chemistry_from_positions(s.xy_A, s.species, CFG, frame_shape=(30, 30))
    si = [d for d in chem.defects if d.kind.startswith("Si")]
    assert si and si[0].signature == ""
    lib = MotifLibrary()
    lib.observe(chem.defects)
    assert si[0].motif == si[0].kind and lib.new_motifs() == []
