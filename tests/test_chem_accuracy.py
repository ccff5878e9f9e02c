"""Criterion 5 end to end: shipped network -> atoms -> graph on held-out simulated frames.

Frames come from engine.sim with the held-out seed (lab.chem.heldout.HELDOUT_SEED, never used in
training). The quick test checks one high-dose cell; the slow one is the criterion's table (doses
>= 1e4, both pixel sizes, 10 frames per cell): ``pytest -m slow tests/test_chem_accuracy.py``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("engine.sim")


#: the slow criterion tests run each CPU precision explicitly (``auto`` picks INT8 only on CPUs with
#: VNNI, so an unpinned run measured FP32 on one machine and INT8 on another). v2's INT8 missed one 5-8-5
#: divacancy (1e5 e/A^2, 0.1 A/px) that FP32 finds: vacancies 13 of 14 (measured 2026-12-02). The network
#: shipped since 2026-12-03 (v3) finds it with INT8 too: at 1e5-1e6 13 of 13 on an AMD EPYC without VNNI,
#: where v2's INT8 found 12 of 13 (that CPU draws other frames: docs/model.md), so the high-dose test runs
#: both precisions plainly. Over every dose kept by the SNR (test_criterion_5) v3's INT8 still misses one
#: vacancy of 14 on that CPU (a V1), as FP32 does there.
INT8_VACANCY = pytest.mark.xfail(strict=True, raises=AssertionError,
                                 reason="INT8 misses one vacancy of 14 over the doses kept by the SNR (vacancy recall "
                                        "0.929 < 0.95; v2: a 5-8-5 at 1e5 e/A^2, 0.1 A/px; v3: a V1) (issue 20)")
#: Since the test run draws every machine's frames as the AVX2 machines do (tests/conftest.py turns numpy's
#: AVX-512 kernels off, 2026-12-04), FP32 misses that V1 on both CPUs measured (AMD EPYC with AVX2 only, and
#: with AVX-512 VNNI): frame 1 of the 1e4 e/A^2, 0.1 A/px cell, estimated SNR 2.18 (kept by the >= 2
#: pooling), where 3 of the vacancy's 12 neighbours within 3.2 A go unfound and the analyzer reads the spot as part of a hole (V9, 5.5 A off). Vacancies 13 of 14,
#: every other target met (2026-12-06, AMD EPYC with AVX-512 VNNI: 55 frames kept, RMSE 0.071 A, Si
#: coordination (designed) 0.990, formula 0.971). A detection miss at the noise floor, not a graph fault.
FP32_VACANCY = pytest.mark.xfail(strict=True, raises=AssertionError,
                                 reason="FP32 misses one V1 of 14 over the doses kept by the SNR (vacancy recall 0.929 < 0.95): "
                                        "a 1e4 e/A^2 frame at estimated SNR 2.18 with 3 of its neighbours unfound")
PRECISIONS = [pytest.param("fp32", id="fp32", marks=FP32_VACANCY), pytest.param("int8", id="int8", marks=INT8_VACANCY)]
HIGH_DOSE_PRECISIONS = ["fp32", "int8"]


@pytest.fixture(scope="module")
def inferencer_of():
    """``inferencer_of(precision)``: the shipped network on the CPU at ``auto``, ``fp32`` or ``int8`` (one
    each, made when first asked for); skips without a shipped model."""
    from engine.infer.model import DEFAULT_MODEL

    if not DEFAULT_MODEL.exists():
        pytest.skip(f"no shipped model at {DEFAULT_MODEL}")
    from engine.infer import Inferencer
    from stemwatch.config import InferenceConfig

    made = {}

    def get(precision: str):
        if precision not in made:
            made[precision] = Inferencer(InferenceConfig(backend="onnx", cpu_precision=precision))
        return made[precision]

    yield get
    for inf in made.values():
        inf.close()


@pytest.fixture(scope="module")
def inferencer(inferencer_of):
    """The network as the analyzer picks it (``auto``)."""
    return inferencer_of("auto")


@pytest.mark.slow
@pytest.mark.parametrize("precision", HIGH_DOSE_PRECISIONS)
def test_criterion_5_at_high_dose(inferencer_of, precision):
    """Criterion 5 at 1e5 and 1e6 (both pixel sizes, 10 frames a cell): every target holds (vacancies
    14/14 on this sample with FP32; 13/14 before a heavy adatom's pentagons stopped hiding a 5-8-5; with
    INT8 since v3)."""
    from lab.chem.heldout import run_heldout

    table = run_heldout(n_frames=10, doses=(1e5, 1e6), inferencer=inferencer_of(precision), progress=False)
    tot = table["totals_dose_ge_1e4"]
    assert tot["rmse_A"] <= 0.1, tot
    assert tot["si_coord_designed"] >= 0.98, tot
    assert tot["formula"] >= 0.95, tot
    assert tot["vacancy_recall"] >= 0.95, tot


def test_heldout_high_dose(inferencer):
    from lab.chem.heldout import run_heldout

    table = run_heldout(n_frames=2, doses=(1e5,), pixel_sizes=(0.05, 0.1), inferencer=inferencer, progress=False)
    tot = table["totals_dose_ge_1e4"]
    assert table["source"] == "engine.sim"
    assert tot["atoms"] > 500 and tot["si"] >= 5
    assert tot["rmse_A"] <= 0.1
    assert tot["recall"] >= 0.95 and tot["precision"] >= 0.95
    assert tot["si_coord_designed"] >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_criterion_5(inferencer_of, precision):
    """Criterion 5 as issue 13 redefined it: pooled over every held-out frame (1e3-1e6 e/A^2, 10 a cell)
    whose C-atom SNR, estimated by the analyzer from the frame, is >= 2 (the others are low_snr and raise
    no events). Measured on the frames drawn before 2026-12-04: 50 of 80 frames kept (none at 1e3, 10 of 20
    at 1e4); RMSE 0.064 A, Si coordination (designed) 100 %, formula 99.0 %, vacancies 14/14. On the frames
    the suite draws since (numpy's AVX-512 kernels off): 55 kept, vacancies 13/14 (:data:`FP32_VACANCY`)."""
    from lab.chem.heldout import run_heldout

    table = run_heldout(n_frames=10, doses=(1e3, 1e4, 1e5, 1e6), inferencer=inferencer_of(precision), progress=False,
                        min_snr=2.0)
    tot = table["totals_dose_ge_1e4"]
    assert tot["frames_kept"] >= 40, tot
    assert tot["rmse_A"] <= 0.1, tot
    assert tot["si_coord_designed"] >= 0.98, tot
    assert tot["formula"] >= 0.95, tot
    assert tot["vacancy_recall"] >= 0.95, tot
