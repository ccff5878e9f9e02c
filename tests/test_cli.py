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
