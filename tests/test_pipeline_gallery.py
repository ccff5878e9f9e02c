"""Issue 15 criterion 6: ``stemwatch analyze --gallery`` writes before/after PNGs next to events.jsonl."""

import json

import numpy as np
import pytest

from stemwatch.cli import main

PIL = pytest.importorskip("PIL")


def test_analyze_gallery_writes_one_png_per_transformation(tmp_path, capsys):
    from PIL import Image

    from dashboard.gallery import CAPTION_PX, CROP_PX, GAP_PX, file_name
    from engine.types import Event

    rec = tmp_path / "movie.swrec"
    assert main(["simulate", "--out", str(rec), "--scenario", "switching", "--seed", "77", "--frames", "14", "-q"]) == 0
    out = tmp_path / "out"
    assert main(["analyze", str(rec), "--out", str(out), "--backend", "onnx", "--quiet", "--gallery"]) == 0
    assert "gallery/" in capsys.readouterr().out
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    trans = [e for e in events if e["category"] == "transformation"]
    assert trans, events
    names = sorted(p.name for p in (out / "gallery").iterdir())
    fields = set(Event.__dataclass_fields__)
    assert names == sorted(file_name(Event(**{k: v for k, v in e.items() if k in fields})) for e in trans)
    pic = np.asarray(Image.open(out / "gallery" / names[0]).convert("RGB"))
    assert pic.shape == (CROP_PX + CAPTION_PX, 2 * CROP_PX + GAP_PX, 3)
    assert pic[CAPTION_PX:, :CROP_PX].std() > 10 and pic[CAPTION_PX:, CROP_PX + GAP_PX:].std() > 10   # two real crops
    assert json.loads((out / "summary.json").read_text())["gallery"] == len(names)
