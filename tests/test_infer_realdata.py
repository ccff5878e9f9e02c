"""The shipped model on real experimental frames (skips where /work/shared/realdata is absent).

The frames have no licence: they are read in place, never copied, and nothing derived from them is
written anywhere. Labels: G_Si_2nm has 140 curated atom positions and the Si; the grain-boundary
frames carry the original authors' network output (not ground truth, so a looser bound).
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.infer.model import DEFAULT_MODEL
from lab.realdata import GB_FILE, REALDATA, SI_FILE, real_frames

SI_FRAMES = REALDATA / SI_FILE
GB_FRAMES = REALDATA / GB_FILE

pytestmark = [pytest.mark.skipif(not SI_FRAMES.is_file(), reason=f"real data not present in {REALDATA}"),
              pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="shipped model missing")]


def detection_scores(image, pixel_size_A, atoms_rc, si_rc=None):
    from engine.infer import Inferencer
    from lab.infer.evaluate import find_atoms_simple, score_frame
    from engine.types import C, SI
    from stemwatch.config import InferenceConfig

    with Inferencer(InferenceConfig(backend="onnx")) as inf:
        probs = inf.predict(image, pixel_size_A)
    pxy, psp = find_atoms_simple(probs)
    txy = np.asarray(atoms_rc, float)[:, ::-1]
    tsp = np.full(len(txy), C, np.int8)
    if si_rc is not None:
        d = np.hypot(*(txy - np.asarray(si_rc, float)[::-1]).T)
        tsp[np.argmin(d)] = SI
    return score_frame(pxy, psp, txy, tsp, image.shape, pixel_size_A)


def test_real_si_frame_atoms_and_si():
    (fr,) = real_frames(REALDATA, names=("G_Si_2nm",))
    c = detection_scores(fr["image"], fr["pixel_size_A"], fr["atoms_rc"], fr["si_rc"])
    print("G_Si_2nm:", c.summary())
    assert c.precision >= 0.95 and c.recall >= 0.95
    assert c.si_tp == 1 and c.si_fp == 0


@pytest.mark.skipif(not GB_FRAMES.is_file(), reason="grain-boundary frames absent")
def test_real_grain_boundary_frames_agree_with_published_network():
    for fr in real_frames(REALDATA, names=("G_GB_4nm", "G_GB_6nm")):
        c = detection_scores(fr["image"], fr["pixel_size_A"], fr["atoms_rc"])
        print(fr["name"], c.summary())
        assert c.recall >= 0.9 and c.precision >= 0.85, fr["name"]
