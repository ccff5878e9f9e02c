"""The configuration protects itself: immutable, validated at construction, CLI defaults from it."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import typing

import pytest

from stemwatch.cli import build_parser, main
from stemwatch.config import ChemistryConfig, Config, ConfigError, EventConfig, load_config
from stemwatch.config_check import RULES


def test_mappings_are_read_only_and_not_shared():
    src = {"C-C": 1.9, "Si-C": 2.1, "Si-Si": 2.5}
    a = Config().replace(chemistry={"bond_cutoff_A": src})
    src["C-C"] = 9.0                                   # the caller's dict is copied
    assert a.chemistry.bond_cutoff_A["C-C"] == 1.9
    with pytest.raises(TypeError):
        a.chemistry.bond_cutoff_A["C-C"] = 3.0
    with pytest.raises(TypeError):
        Config().chemistry.max_coordination["Si"] = 3
    b = a.replace(chemistry={"prob_threshold": 0.4})
    assert b.chemistry.bond_cutoff_A == a.chemistry.bond_cutoff_A and b.chemistry.prob_threshold == 0.4
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.tracking.memory_frames = 9


@pytest.mark.parametrize("section, values, words", [
    ("tracking", {"memory_frames": "3"}, ["tracking.memory_frames", "integer", "frames", "'3'"]),
    ("tracking", {"memory_frames": 2.5}, ["tracking.memory_frames", "integer"]),
    ("tracking", {"memory_frames": -1}, ["tracking.memory_frames", ">= 0", "frames"]),
    ("tracking", {"max_speed_A_per_frame": 0}, ["tracking.max_speed_A_per_frame", "> 0", "A/frame"]),
    ("stream", {"stall_timeout_s": float("inf")}, ["stream.stall_timeout_s", "finite", "(s)"]),
    ("stream", {"poll_interval_s": 0}, ["stream.poll_interval_s", "> 0", "(s)"]),
    ("chemistry", {"prob_threshold": 1.5}, ["chemistry.prob_threshold", "<= 1"]),
    ("chemistry", {"bond_cutoff_A": {"C-C": -1.0}}, ["chemistry.bond_cutoff_A['C-C']", "> 0", "(A)"]),
    ("chemistry", {"refine_gaussian": 1}, ["chemistry.refine_gaussian", "true or false"]),
    ("inference", {"backend": "cuda"}, ["inference.backend", "'onnx'"]),
    ("stream", {"recorder_policy": "wait"}, ["stream.recorder_policy", "'block'"]),
    ("events", {"k_of_n": [4, 3]}, ["events.k_of_n", "K <= N"]),
    ("dashboard", {"port": 70000}, ["dashboard.port", "65535"]),
    ("tracking", {"nonsense": 1}, ["tracking", "'nonsense'"]),
])
def test_bad_values_are_refused_with_field_and_unit(section, values, words):
    with pytest.raises(ConfigError) as exc:
        Config().replace(**{section: values})
    for w in words:
        assert w in str(exc.value), (w, str(exc.value))
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, TypeError)


def test_json_types_are_coerced():
    cfg = Config.from_dict({"tracking": {"memory_frames": 4.0, "max_speed_A_per_frame": 1},
                            "events": {"k_of_n": [2, 3]}, "chemistry": {"si_c_shell_A": [2, 2.3]},
                            "dashboard": {"allow_origins": ["pc:5006"]}})
    assert cfg.tracking.memory_frames == 4 and type(cfg.tracking.memory_frames) is int
    assert type(cfg.tracking.max_speed_A_per_frame) is float
    assert cfg.events.k_of_n == (2, 3) and cfg.chemistry.si_c_shell_A == (2.0, 2.3)
    assert cfg.dashboard.allow_origins == ("pc:5006",)
    assert EventConfig(k_of_n=[3, 4]) == EventConfig()                  # list -> tuple
    assert Config(tracking={"memory_frames": 5}).tracking.memory_frames == 5
    with pytest.raises(ConfigError, match="unknown configuration section 'trackin'"):
        Config.from_dict({"trackin": {}})


def test_round_trips_json_pickle_deepcopy():
    cfg = Config().replace(tracking={"memory_frames": 4}, chemistry={"max_coordination": {"C": 3, "Si": 4}})
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert pickle.loads(pickle.dumps(cfg)) == cfg and copy.deepcopy(cfg) == cfg
    assert isinstance(cfg.to_dict()["chemistry"]["bond_cutoff_A"], dict)


def test_rules_name_real_fields_and_enumerations_are_literals():
    names = {f"{s}.{f.name}" for s in Config().to_dict() for f in dataclasses.fields(getattr(Config(), s))}
    assert set(RULES) <= names, set(RULES) - names
    hints = typing.get_type_hints(type(Config().inference))
    assert typing.get_args(hints["backend"]) == ("auto", "tensorrt", "onnx")


def test_load_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"tracking": {"memory_frames": "3"}}')
    with pytest.raises(ConfigError, match=r"bad\.json: tracking\.memory_frames"):
        load_config(bad)
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="not JSON"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")


def test_config_show_prints_effective_configuration(tmp_path, capsys):
    f = tmp_path / "o.json"
    f.write_text('{"tracking": {"memory_frames": 4}}')
    assert main(["config", "--show", "--config", str(f), "--set", "inference.backend=onnx",
                 "--set", "events.k_of_n=[2, 3]"]) == 0
    shown = json.loads(capsys.readouterr().out)
    expect = Config().replace(tracking={"memory_frames": 4}, inference={"backend": "onnx"}, events={"k_of_n": (2, 3)})
    assert Config.from_dict(shown) == expect
    assert main(["config", "--set", 'tracking.memory_frames="3"']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tracking.memory_frames" in err


def test_cli_defaults_come_from_config_and_do_not_override_the_file(tmp_path):
    """Options not given leave the configuration (and a --config file) alone: before, the
    --backend default 'auto' replaced a file's inference.backend."""
    from dashboard.cli import dashboard_config
    from engine.cli import config_from_args

    f = tmp_path / "o.json"
    f.write_text('{"inference": {"backend": "onnx"}, "events": {"min_confidence": 0.7}, "dashboard": {"port": 6123}}')
    parser = build_parser()
    args = parser.parse_args(["serve", "--connect", "tcp://127.0.0.1:1", "--config", str(f)])
    cfg = config_from_args(args)
    assert cfg.inference.backend == "onnx" and cfg.events.min_confidence == 0.7
    assert dashboard_config(cfg, args).dashboard.port == 6123
    plain = config_from_args(parser.parse_args(["analyze", "x", "--out", "y"]))
    assert plain == Config()
    given = config_from_args(parser.parse_args(["analyze", "x", "--out", "y", "--backend", "onnx", "--k-of-n", "2", "3"]))
    assert given.inference.backend == "onnx" and given.events.k_of_n == (2, 3)
    with pytest.raises(SystemExit) as exc:
        config_from_args(parser.parse_args(["analyze", "x", "--out", "y", "--k-of-n", "4", "3"]))
    assert exc.value.code == 2
    assert ChemistryConfig() == Config().chemistry
