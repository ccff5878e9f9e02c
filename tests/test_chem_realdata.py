"""The whole chemistry stage on real HAADF frames (evaluation only; skips when the data is absent).

/work/shared/realdata has no licence: nothing from it is written anywhere by these tests.
"""

from __future__ import annotations

import pytest

from lab.chem.evaluate import REALDATA, analyse_real, real_frames

pytestmark = pytest.mark.skipif(not REALDATA.exists(), reason=f"{REALDATA} absent (real frames are not shipped)")


@pytest.fixture(scope="module")
def rows():
    from engine.infer.model import DEFAULT_MODEL

    if not DEFAULT_MODEL.exists():
        pytest.skip(f"no shipped model at {DEFAULT_MODEL}")
    items = real_frames(REALDATA)
    if not items:
        pytest.skip("no readable frames in the real-data folder")
    return {r["frame"]: r for r in analyse_real(items)}


def test_labelled_atoms_are_found(rows):
    for name in ("G_Si_2nm", "G_GB_4nm", "G_GB_6nm"):
        r = rows[name]
        assert r["recall"] >= 0.99, r
        assert r["rms_vs_labels_A"] < 0.12, r
    assert rows["G_Si_2nm"]["precision"] >= 0.98
    assert rows["G_GB_4nm"]["precision"] >= 0.98


def test_dopants_and_their_coordination(rows):
    si = rows["G_Si_2nm"]
    assert si["Si"] == 1 and si["Si_matched"] == 1 and si["Si_coordination"] == [3]
    assert rows["G_Si_4fold"]["Si"] == 1 and rows["G_Si_4fold"]["Si_coordination"] == [4]
    assert rows["G_dimSi"]["Si"] == 2
    assert rows["G_trimSi"]["Si"] == 3
    assert rows["G_Si_4fold"]["defects"] == ["Si-4fold:Si1C4"]
    assert rows["G_Si_2nm"]["defects"] == ["Si-3fold:Si1C3"]
    # the grain-boundary frames hold no dopant on the lattice the authors labelled. G_GB_6nm has a
    # saturated contamination blob the labels leave out: the model reads a few bright atoms on its rim
    # as heavy (8 with the shipped model, 1 with the first one); nothing can confirm or deny those.
    assert rows["G_GB_4nm"]["Si"] - rows["G_GB_4nm"]["Si_at_border"] == 0
    for name in ("G_GB_4nm", "G_GB_6nm"):
        assert rows[name]["Si_on_labelled"] == 0, rows[name]
        assert any(d.startswith("grain-boundary") for d in rows[name]["defects"]), rows[name]["defects"]


def test_contamination_region_reported(rows):
    """G_GB_6nm's saturated blob is contamination: the second model reads a honeycomb through it, so
    the graph alone would not say so; the raw-frame overlayer rule (ChemistryConfig.overlayer_excess) does."""
    assert any(d.startswith("contamination") for d in rows["G_GB_6nm"]["defects"])
