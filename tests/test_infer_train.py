"""Training pieces: labels follow the image through augmentation, label rasterisation, checkpoints, export."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from lab.train.data import BankItem, augment_crop, frame_to_grid, rasterise_labels


def _blob_item(rng, n_atoms=40, side=96):
    xy = rng.uniform(8, side - 8, (n_atoms, 2))
    xy = xy[np.argsort(xy[:, 0])]
    keep = np.ones(len(xy), bool)
    for i in range(len(xy)):                          # keep atoms >= 5 px apart
        if keep[i]:
            d = np.hypot(*(xy[i + 1:] - xy[i]).T)
            keep[i + 1:][d < 5] = False
    xy = xy[keep]
    yy, xx = np.mgrid[0:side, 0:side]
    img = np.zeros((side, side), np.float32)
    cls = rng.integers(1, 3, len(xy))
    for (x, y), c in zip(xy, cls):
        img += (c * 1.0) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.2 ** 2))
    return BankItem(img, xy, cls.astype(np.int64), 0.2, float("nan"))


def test_augmented_labels_stay_on_the_atoms():
    """After crop/rotation/flip, blobs rendered at the transformed labels reproduce the image."""
    rng = np.random.default_rng(0)
    item = _blob_item(rng)
    yy, xx = np.mgrid[0:64, 0:64]
    for _ in range(20):
        x, xy, cls = augment_crop(rng, item, 64, strength=0.0)   # geometric only (+ gain/offset)
        expect = np.zeros((64, 64))
        for (px, py), c in zip(xy, cls):
            expect += c * np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * 1.2 ** 2))
        r = np.corrcoef(x.ravel(), expect.ravel())[0, 1]
        assert r > 0.99, r


def test_rasterised_discs():
    xy = np.array([[10.0, 12.0], [20.4, 5.6]])
    lab = rasterise_labels((32, 32), xy, np.array([1, 2]), 2.0)
    assert lab[12, 10] == 1 and lab[6, 20] == 2 and lab[0, 0] == 0
    assert (lab == 1).sum() == 13                       # disc of radius 2 on the pixel grid
    com = ndimage.center_of_mass(lab == 2)
    assert abs(com[1] - 20.4) < 0.5 and abs(com[0] - 5.6) < 0.5


def test_frame_to_grid_positions():
    img = np.zeros((100, 60), np.float32)
    g, xy, gpx = frame_to_grid(img, np.array([[29.5, 49.5], [0.0, 0.0]]), 0.1, 0.2)
    assert g.shape == (50, 30) and abs(gpx - 0.2) < 1e-9
    np.testing.assert_allclose(xy, [[14.5, 24.5], [-0.25, -0.25]])


def test_checkpoint_round_trip_and_export(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    import onnxruntime as ort

    from engine.infer.model import ModelContract
    from engine.infer.preprocess import NORMALISATION
    from lab.train.export import export_both, torch_reference
    from lab.train.network import StemFCN
    from lab.train.training import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    net = StemFCN((4, 8), 1)
    for m in net.modules():                              # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    net.eval()
    opt = torch.optim.AdamW(net.parameters())
    net(torch.zeros(1, 1, 8, 8)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "c.npz", net, opt, 7, {"arch": {"widths": [4, 8], "convs": 1}})
    net2, meta = load_checkpoint(tmp_path / "c.npz", torch.optim.AdamW(StemFCN((4, 8), 1).parameters()))
    assert meta["step"] == 7
    x = np.random.default_rng(1).normal(0, 1, (1, 1, 40, 24)).astype(np.float32)
    np.testing.assert_allclose(torch_reference(net2, x), torch_reference(net, x), atol=1e-6)
    p32, p16 = export_both(net, tmp_path, 0.2, NORMALISATION)
    assert not list(tmp_path.glob("*.data"))
    for p, tol in ((p32, 1e-5), (p16, 2e-2)):
        y = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        assert np.abs(y - torch_reference(net, x)).max() < tol
    c = ModelContract.load(p32)
    assert c.multiple == 2 and c.pixel_size_A == 0.2 and c.receptive_radius_px == net.receptive_radius_px()


@pytest.mark.slow
def test_train_command_is_seeded_and_reproducible(tmp_path):
    """`stemwatch train` end to end (tiny): log, checkpoints, exported models; same seed -> same weights."""
    pytest.importorskip("torch")
    pytest.importorskip("engine.sim")
    import json
    import subprocess
    import sys

    from engine.infer.model import ModelContract

    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        cmd = [sys.executable, "-m", "stemwatch", "train", "--out", str(out), "--steps", "6", "--bank", "4",
               "--val-frames", "3", "--batch", "2", "--no-progress"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append(out)
    a, b = outs
    for name in ("ckpt_last.npz", "ckpt_best.npz", "log.jsonl", "summary.json", "config.json",
                 "stemwatch_fcn.onnx", "stemwatch_fcn_fp16.onnx"):
        assert (a / name).is_file(), name
    log = [json.loads(line) for line in (a / "log.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "bank_ready" and log[-1]["event"] == "done"
    assert any("val" in rec for rec in log)
    za, zb = np.load(a / "ckpt_last.npz"), np.load(b / "ckpt_last.npz")
    for k in za.files:
        if k.startswith("model/"):
            np.testing.assert_array_equal(za[k], zb[k])
    c = ModelContract.load(a / "stemwatch_fcn.onnx")
    assert json.loads(c.metadata["stemwatch.training"])["steps"] == 6
