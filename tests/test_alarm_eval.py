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


def test_a_seed_whose_scene_cannot_be_laid_out_is_skipped_and_listed(monkeypatch):
    """Seed 971003 (HAADF 3e4) has no room for its cluster: the whole evaluation died with the
    simulator's ValueError after 3 movies. It is now skipped, listed, and the others are scored."""
    from lab import alarm_eval as A

    def one(job):
        if job[2] == 5:
            return {"skipped": True, "contrast": job[0], "dose": job[1], "seed": job[2], "why": "no room for dopant 3"}
        return {"contrast": job[0], "dose": job[1], "seed": job[2], "frames": 10, "truth": 2, "found": 2, "false": 0,
                "glitch_false": 0, "duplicates": 0, "glitches": 1, "per_kind": {"si_3_to_4": {"truth": 2, "found": 2,
                                                                                                  "false": 0}}}
    monkeypatch.setattr(A, "_one_movie", one)
    r = A.run_heldout(seeds=2, n_frames=10, doses=(1e5,), contrasts=("HAADF",), seed0=4)
    assert r["total"]["frames"] == 10 and r["skipped"] == [{"contrast": "HAADF", "dose": 1e5, "seed": 5,
                                                            "why": "no room for dopant 3"}]
    assert "skipped: HAADF 1e+05 seed 5" in A.format_heldout(r)


def test_the_movie_task_reports_an_impossible_scene_as_skipped(tmp_path):
    from lab.alarm_eval import _one_movie
    from stemwatch.config import Config

    r = _one_movie(("HAADF", 3e4, 971003, 2.0, 90, Config(), str(tmp_path), False))   # its layout fails at once
    assert r["skipped"] and "no room" in r["why"] and r["seed"] == 971003


def test_kept_movies_are_rescored_to_the_same_report(tmp_path):
    """``rescore_kept`` scores the folders ``--keep`` left, without analysing them again (how a
    scorer fix is applied to a set already run): same totals as the run."""
    import lab.alarm_eval as A

    r = A.run_heldout(seeds=1, n_frames=8, doses=(1e6,), contrasts=("HAADF",), seed0=963_100, work_dir=tmp_path)
    again = A.rescore_kept(tmp_path, 963_100)
    assert again["total"] == r["total"] and again["per_kind"] == r["per_kind"]
    assert [m["seed"] for m in again["movies"]] == [963_100]
