"""Fine-tuning from the shipped ONNX model and the hole emphasis of `stemwatch train` (issue 13 criterion 3):
the converter reproduces the model exactly, BatchNorm calibration keeps its function, the hole zone and
its loss weight are what they claim, and the default recipe draws exactly what it drew before."""

from __future__ import annotations

import numpy as np
import pytest

from lab.train.data import BankItem, augment_crop, hole_zone, make_batch

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from engine.infer.model import DEFAULT_MODEL  # noqa: E402


def _onnx_probs(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x})[0]


def _lattice_item(hole_centre=None, hole_radius_A=5.0, side=96, px_A=0.2):
    """A graphene-like triangular point lattice (1.42 A nearest neighbours) on a model grid, optionally with
    every atom within ``hole_radius_A`` of ``hole_centre`` (grid px) removed."""
    a = 1.42 / px_A
    pts = []
    for i in range(-2, int(side / a) + 3):
        for j in range(-2, int(side / (a * np.sqrt(3) / 2)) + 3):
            pts.append(((i + 0.5 * (j % 2)) * a, j * a * np.sqrt(3) / 2))
    xy = np.array(pts)
    xy = xy[(xy[:, 0] > -15) & (xy[:, 0] < side + 15) & (xy[:, 1] > -15) & (xy[:, 1] < side + 15)]
    if hole_centre is not None:
        xy = xy[np.hypot(*(xy - np.asarray(hole_centre)).T) > hole_radius_A / px_A]
    img = np.random.default_rng(0).random((side, side)).astype(np.float32)
    return BankItem(img, xy, np.ones(len(xy), np.int64), px_A, float("nan"))


def test_net_from_onnx_reproduces_the_shipped_model():
    from lab.train.export import torch_reference
    from lab.train.from_onnx import net_from_onnx

    net = net_from_onnx(DEFAULT_MODEL)
    x = np.random.default_rng(1).random((1, 1, 96, 128)).astype(np.float32)
    ref = _onnx_probs(DEFAULT_MODEL, x)
    np.testing.assert_allclose(torch_reference(net, x), ref, atol=1e-5)
    assert net.n_params() == 115363                   # the model card's count: every weight is used


def test_net_from_onnx_refuses_the_int8_file():
    from engine.infer.cpu_precision import int8_path
    from lab.train.from_onnx import net_from_onnx

    p = int8_path(DEFAULT_MODEL)
    if not p.is_file():
        pytest.skip("no INT8 file")
    with pytest.raises(ValueError):
        net_from_onnx(p)


def test_batchnorm_calibration_keeps_the_function_and_matches_training_mode():
    """After calibration: eval mode is still the ONNX model; on the calibration batch itself training mode
    (batch statistics) gives the same logits too, i.e. fine-tuning starts from the shipped model."""
    from torch import nn

    from lab.train.export import torch_reference
    from lab.train.from_onnx import calibrate_batchnorm, net_from_onnx

    net = net_from_onnx(DEFAULT_MODEL)
    rng = np.random.default_rng(2)
    xb = (rng.random((4, 1, 64, 64)) * 2.0).astype(np.float32)
    calibrate_batchnorm(net, [xb])
    bn = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(float((m.running_var - (1 - m.eps)).abs().max()) > 1e-3 for m in bn)   # moved to the data
    x = rng.random((1, 1, 96, 128)).astype(np.float32)
    np.testing.assert_allclose(torch_reference(net, x), _onnx_probs(DEFAULT_MODEL, x), atol=1e-5)
    net.eval()
    with torch.no_grad():
        ev = net(torch.from_numpy(xb)).numpy()
    net.train()
    with torch.no_grad():
        tr = net(torch.from_numpy(xb)).numpy()
    np.testing.assert_allclose(tr, ev, atol=2e-3 * max(1.0, float(np.abs(ev).max())))


def test_hole_zone_is_the_hole_its_band_and_rim():
    centre = (48.0, 48.0)
    item = _lattice_item(centre, hole_radius_A=5.0)
    zone = hole_zone(item)
    assert zone[48, 48]                                # the hole's centre
    yy, xx = np.mgrid[0:96, 0:96]
    r_A = np.hypot(xx - centre[0], yy - centre[1]) * 0.2
    # the hole (radius 5 A) less 2 A to its rim atoms is core; the zone reaches 2.5 A beyond that core
    assert zone[r_A < 2.5].all()
    assert not zone[r_A > 5.0 + 2.5 + 0.8].any()
    rim = np.hypot(*(item.xy - centre).T) * 0.2 < 5.0 + 0.6
    ix, iy = np.rint(item.xy[rim]).astype(int).T
    assert zone[iy, ix].mean() > 0.9                   # the rim atoms are in it (their loss counts too)
    assert not hole_zone(_lattice_item(None)).any()   # an intact lattice has no hole (also at the frame edge)


def test_hole_weighted_loss_is_cross_entropy_without_holes_and_weights_the_zone():
    import torch.nn.functional as F

    from lab.train.training import hole_weighted_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 16, 16, generator=g)
    labels = torch.randint(0, 3, (2, 16, 16), generator=g)
    labels[0, :3] = -1
    w = torch.tensor([1.0, 1.0, 4.0])
    none = torch.zeros(2, 16, 16, dtype=torch.bool)
    ref = F.cross_entropy(logits, labels, weight=w, ignore_index=-1)
    torch.testing.assert_close(hole_weighted_loss(logits, labels, none, w, 5.0), ref)
    zone = torch.zeros(2, 16, 16, dtype=torch.bool)
    zone[1, 4:10, 4:10] = True
    per = F.cross_entropy(logits, labels, weight=w, ignore_index=-1, reduction="none")
    cw = w[labels.clamp(min=0)] * (labels >= 0)
    pw = 1 + 4.0 * zone.float()
    torch.testing.assert_close(hole_weighted_loss(logits, labels, zone, w, 5.0), (per * pw).sum() / (cw * pw).sum())
    # the zone's pixels count five times: raising their loss moves the total accordingly
    assert hole_weighted_loss(logits, labels, zone, w, 5.0) != ref


def test_zone_crops_follow_the_image_and_draw_no_extra_random_numbers():
    item = _lattice_item((40.0, 50.0))
    zone = hole_zone(item)
    for seed in range(6):
        a = augment_crop(np.random.default_rng(seed), item, 64, strength=0.0, return_ignore=True)
        b = augment_crop(np.random.default_rng(seed), item, 64, strength=0.0, return_ignore=True,
                         extra=item.image)
        np.testing.assert_array_equal(a[0], b[0])
        raw = b[-1]                                    # the raw image, moved as the crop: affine to x
        assert np.corrcoef(raw.ravel(), b[0].ravel())[0, 1] > 0.999
        c = augment_crop(np.random.default_rng(seed), item, 64, strength=0.0, return_ignore=True, extra=zone)
        assert c[-1].dtype == bool and c[-1].shape == (64, 64)
    bank = [item, _lattice_item(None)]
    x1, y1 = make_batch(np.random.default_rng(3), bank, 4, 64, 2.0)
    x2, y2, z2 = make_batch(np.random.default_rng(3), bank, 4, 64, 2.0, with_zone=True)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert z2.any() and not z2.all()


def test_default_training_recipe_has_the_hole_emphasis_off():
    from lab.train.training import TrainConfig

    cfg = TrainConfig()
    assert cfg.hole_fraction == 0.0 and cfg.hole_weight == 1.0 and cfg.init_from == ""


@pytest.mark.slow
def test_train_init_from_onnx_with_hole_emphasis(tmp_path):
    """`stemwatch train --init <onnx> --hole-weight --hole-fraction` end to end (tiny): runs, exports, and its
    configuration records the options; at step 0 the calibrated net is the shipped model."""
    import json
    import subprocess
    import sys

    out = tmp_path / "ft"
    cmd = [sys.executable, "-m", "stemwatch", "train", "--out", str(out), "--steps", "3", "--bank", "4",
           "--val-frames", "3", "--batch", "2", "--threads", "1", "--no-progress", "--init", str(DEFAULT_MODEL),
           "--hole-weight", "5", "--hole-fraction", "0.6", "--lr", "1e-4", "--warmup", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["hole_weight"] == 5.0 and cfg["hole_fraction"] == 0.6 and cfg["init_from"] == str(DEFAULT_MODEL)
    assert (out / "stemwatch_fcn.onnx").is_file()
    # three small steps barely move it: it starts from the shipped weights (a 3-step run from scratch finds nothing)
    from engine.infer import Inferencer
    from lab.infer.evaluate import find_atoms_simple, score_frame
    from lab.infer.heldout import cell_frames
    from stemwatch.config import InferenceConfig

    (image, xy, sp, px, ign), = cell_frames(1e5, 0.1, "plain", 1, seed=5101)
    with Inferencer(InferenceConfig(backend="onnx", model_path=str(out / "stemwatch_fcn.onnx"),
                                    cpu_precision="fp32")) as inf:
        pxy, psp = find_atoms_simple(inf.predict(image, px))
    assert score_frame(pxy, psp, xy, sp, image.shape, px, ignore_xy_px=ign).f1 > 0.95


def test_contamination_labels_background_keeps_the_lattice_under_a_patch():
    """``ignore_contamination=False`` (``--contamination-labels background``, issue 21 criterion 2): no pixel is
    ignored, the lattice atoms under a patch keep their C discs and the patch's own atoms are background; the
    same random draws as the default."""
    item = _lattice_item(None)
    centre = np.array([48.0, 48.0])
    near = np.hypot(*(item.xy - centre).T) < 12
    rng = np.random.default_rng(7)
    patch = centre + rng.uniform(-12, 12, (40, 2))          # non-lattice atoms over the lattice
    item.ignore_xy = patch
    y_ign = make_batch(np.random.default_rng(3), [item], 3, 96, 2.0)[1]
    y_bg = make_batch(np.random.default_rng(3), [item], 3, 96, 2.0, ignore_contamination=False)[1]
    assert (y_ign == -1).any() and not (y_bg == -1).any()
    assert set(np.unique(y_bg)) == {0, 1}
    # where the default ignores, the background labelling holds the lattice's C discs and background between them
    ign = y_ign == -1
    assert (y_bg[ign] == 1).any() and (y_bg[ign] == 0).any()
    np.testing.assert_array_equal(y_bg[~ign], y_ign[~ign])
    assert near.sum() >= 8                                  # the patch lies over lattice atoms


def test_default_training_recipe_ignores_contamination():
    from lab.train.training import TrainConfig

    cfg = TrainConfig()
    assert cfg.contamination_fraction == 0.0 and cfg.contamination_labels == "ignore"


def test_recipe_records_what_differs_from_the_default_and_the_starting_weights():
    from dataclasses import asdict

    from lab.train.training import TrainConfig, recipe

    assert recipe(asdict(TrainConfig())) == {}
    cfg = TrainConfig(out_dir="elsewhere", threads=1, lr=3e-4, contamination_fraction=0.6,
                      contamination_labels="background", init_from="/some/dir/stemwatch_fcn.onnx")
    r = recipe(asdict(cfg), "ab" * 32)
    assert r == {"lr": 3e-4, "contamination_fraction": 0.6, "contamination_labels": "background",
                 "init_from": {"file": "stemwatch_fcn.onnx", "sha256": "ab" * 32}}
    assert recipe(asdict(cfg))["init_from"] == {"file": "stemwatch_fcn.onnx"}
