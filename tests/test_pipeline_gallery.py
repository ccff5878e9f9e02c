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


def test_one_cutter_crop_geometry_atoms_bonds_and_file_round_trip(tmp_path):
    """engine.gallery.cut: the image pixels around the spot (NaN beyond the frame), atoms and whole
    bonds within the margin, all in crop pixels; gallery.npz keeps every panel field."""
    from engine.gallery import GalleryFrame, MARGIN_A, cut, gallery_item, load_gallery, save_gallery

    ps = 0.5
    img = np.arange(40 * 60, dtype=np.float32).reshape(40, 60)
    xy = np.array([[1.0, 1.0], [2.0, 1.5], [20.0, 15.0], [21.4, 15.0]])        # A
    frame = GalleryFrame(seq=7, series="s", image=img, step_A=ps, xy_A=xy,
                         species=np.array(["C", "Si", "C", "Si"], object), coordination=np.array([3, 3, 3, 4]),
                         edge=np.array([True, False, False, False]), track=np.array([1, 2, 3, 4]),
                         bonds_A=np.array([[1.0, 1.0, 2.0, 1.5], [20.0, 15.0, 21.4, 15.0]]))
    p = cut(frame, (2.0, 1.5), size_A=4.0)                  # at the top-left corner of the field
    assert np.isnan(p.image[0, 0]) and np.isfinite(p.image).any()
    # crop pixel (i, j) is frame pixel (i + y0, j + x0): values follow the frame's
    x0, y0 = 2.0 / ps - p.centre[0], 1.5 / ps - p.centre[1]             # the crop's origin in the frame
    i, j = np.argwhere(np.isfinite(p.image))[0]
    assert p.image[i, j] == img[int(round(i + y0)), int(round(j + x0))]
    assert list(p.species) == ["C", "Si"] and np.allclose(p.xy[1], p.centre)     # far atoms left out
    assert len(p.bonds) == 1 and np.allclose(p.bonds[0], [*p.xy[0], *p.xy[1]])   # the bond, whole
    far = cut(frame, (20.0 - 4.0 / 2 - MARGIN_A - 0.6, 15.0), size_A=4.0)
    assert len(far.xy) == 0 and len(far.bonds) == 0
    ev = {"frame": 7, "kind": "si_3_to_4", "atom_id": 2, "x_A": 2.0, "y_A": 1.5, "first_frame": 6,
          "before": "3-fold", "after": "4-fold"}
    item = gallery_item(ev, frame, frame)
    save_gallery([item], tmp_path / "g.npz")
    back = load_gallery(tmp_path / "g.npz")[0]
    assert back.event == ev and back.before.seq == back.after.seq == 7
    for name in ("image", "xy", "coordination", "edge", "bonds"):
        assert np.array_equal(getattr(back.after, name), getattr(item.after, name), equal_nan=name == "image")
    assert list(back.after.species) == list(item.after.species) and back.after.centre == item.after.centre
