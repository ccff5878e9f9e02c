"""Issue 15 criterion 4: the held-out alarm evaluation (`stemwatch evaluate --heldout`)."""

import pytest

from stemwatch.cli import main


def test_evaluate_needs_its_folders_unless_heldout(capsys):
    assert main(["evaluate"]) == 2
    err = capsys.readouterr().err
    assert "OUT_DIR and GROUND_TRUTH" in err and "Traceback" not in err


def test_heldout_movies_cover_every_kind_and_glitches():
    from lab.alarm_eval import HELDOUT_SEED0, movie_spec
    from engine.sim.movie import MovieSimulator

    spec = movie_spec("MAADF", 3e4, HELDOUT_SEED0, n_frames=60, drift_A=2.0)
    kinds = {e[1] for e in spec.events}
    assert kinds >= {"vacancy_created", "si_3_to_4", "si_4_to_3", "si_hop", "dimer_formed", "dimer_broken", "rotor"}
    assert {g[1] for g in spec.glitches} == {"dose_dip", "scan_tear"}
    assert not {g[0] for g in spec.glitches} & {e[0] for e in spec.events}   # a glitch never hides an event
    assert spec.imaging.gamma == 1.3 and abs(sum(v * v for v in spec.drift_A_per_frame) ** 0.5 - 2.0) < 1e-9
    MovieSimulator(spec)                                          # the dopants fit the drifting field


@pytest.mark.slow
def test_heldout_runs_end_to_end_and_prints_the_tables(capsys):
    assert main(["evaluate", "--heldout", "--frames", "24", "--doses", "1e5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "HAADF 1e+05" in out and "MAADF 1e+05" in out and "total" in out and "vacancy_created" in out


def test_heldout_fast_movie_drifts_2_A_per_frame_and_reverses():
    """The '2 A/frame' movies really drift 2 A/frame (the simulator capped every drift at 1.5) and
    the field turns back at the drift bound (a per-axis reversal)."""
    import numpy as np

    from engine.sim.movie import MovieSimulator
    from lab.alarm_eval import HELDOUT_SEED0, movie_spec

    sim = MovieSimulator(movie_spec("HAADF", 1e5, HELDOUT_SEED0 + 1, n_frames=60, drift_A=2.0))
    steps = np.diff(np.array([sim.origin_of(f) for f in range(60)]), axis=0)
    speed = np.hypot(*steps.T)
    assert np.median(speed) > 1.9 and speed.max() <= 2.0 + 1e-9
    assert (np.sign(steps[1:]) != np.sign(steps[:-1])).any()         # it reverses
