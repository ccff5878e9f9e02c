"""The command line builds and every sub-command has help."""

import subprocess
import sys

from stemwatch.cli import build_parser, main
from stemwatch.config import Config


def test_help_lists_bench_and_runs_fast():
    out = subprocess.run([sys.executable, "-m", "stemwatch", "--help"], capture_output=True, text=True, check=True)
    assert "bench" in out.stdout


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sub.choices, "no sub-commands registered"
    for name, p in sub.choices.items():
        assert p.format_help().strip(), name


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2


def test_config_replace_checks_names():
    cfg = Config().replace(tracking={"memory_frames": 5})
    assert cfg.tracking.memory_frames == 5
    import pytest
    with pytest.raises(TypeError):
        Config().replace(nonsense={"a": 1})
    with pytest.raises(TypeError):
        Config().replace(tracking={"nonsense": 1})


def test_one_blas_thread_only_before_numpy_and_never_over_the_user():
    from stemwatch.cli import one_blas_thread

    env: dict = {}
    assert one_blas_thread(env, {}) and env == {"OPENBLAS_NUM_THREADS": "1"}
    env = {"OPENBLAS_NUM_THREADS": "2"}
    assert not one_blas_thread(env, {}) and env == {"OPENBLAS_NUM_THREADS": "2"}      # the user's choice
    env = {}
    assert not one_blas_thread(env, {"numpy": object()}) and env == {}               # too late to matter


def test_the_cli_gives_openblas_one_thread_before_numpy_loads():
    """`stemwatch ...` sets it before any sub-command module imports NumPy (and its children inherit it):
    with OpenBLAS's thread per core, the material check's small products stalled on a busy machine."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import os, sys\nfrom stemwatch.cli import main\nrc = main(['config', '--show'])\n"
            "import numpy\nprint('BLAS', os.environ.get('OPENBLAS_NUM_THREADS'), rc)")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "BLAS 1" in out.stdout, (out.stdout[-500:], out.stderr[-2000:])
