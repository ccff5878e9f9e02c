"""Weight-space interpolation of two networks of one architecture (WiSE-FT, Wortsman et al., CVPR 2022).

A fine-tune from the shipped weights learns its new task (here: a C column under contamination is C) but
can drift on the old one (an Si at the frame edge). Interpolating the fine-tuned weights with the ones
it started from, ``(1 - alpha) * base + alpha * tuned``, usually keeps most of the new skill and most of
the old accuracy; ``alpha`` is chosen on development frames, then checked on held-out ones.

Both models are read from their exported ONNX files with :func:`lab.train.from_onnx.net_from_onnx`
(BatchNorm folded into the convolutions, BatchNorm set to the identity), so the interpolation is of the
folded convolution weights and biases, and the result exports through :func:`lab.train.export.export_both`
like any trained network. ``alpha = 0`` gives the base network, ``alpha = 1`` the tuned one.
"""

from __future__ import annotations

import json
from pathlib import Path


def interpolate_nets(base: str | Path, tuned: str | Path, alpha: float):
    """A :class:`~lab.train.network.StemFCN` (eval mode) with weights ``(1 - alpha) * base + alpha * tuned``,
    and the provenance to record. Raises ``ValueError`` when ``alpha`` is outside [0, 1] or the two models
    differ in architecture, pixel size or normalisation (an interpolation of those would be meaningless)."""
    import torch

    from engine.infer.model import ModelContract
    from lab.train.from_onnx import net_from_onnx

    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    cb, ct = ModelContract.load(base), ModelContract.load(tuned)       # metadata and sha256, one read each
    mb, mt = cb.metadata, ct.metadata
    for key in ("stemwatch.architecture", "stemwatch.pixel_size_A", "stemwatch.normalisation",
                "stemwatch.classes", "stemwatch.precision"):
        if mb.get(key) != mt.get(key):
            raise ValueError(f"{Path(base).name} and {Path(tuned).name} differ in {key} "
                             f"({mb.get(key)!r} vs {mt.get(key)!r}): not one architecture")
    if mb.get("stemwatch.precision") != "fp32":
        raise ValueError(f"interpolate FP32 models, not {mb.get('stemwatch.precision')!r}")
    net_b, net_t = net_from_onnx(base), net_from_onnx(tuned)
    sd_b, sd_t = net_b.state_dict(), net_t.state_dict()
    mixed = {}
    with torch.no_grad():
        for k, vb in sd_b.items():
            vt = sd_t[k]
            mixed[k] = (1.0 - alpha) * vb + alpha * vt if vb.is_floating_point() else vt
    net_t.load_state_dict(mixed)
    net_t.eval()
    training = json.loads(mt.get("stemwatch.training", "{}") or "{}")
    provenance = {**training, "interpolation": {
        "alpha": alpha, "method": "WiSE-FT weight interpolation of the BatchNorm-folded convolutions",
        "base": {"file": Path(base).name, "sha256": cb.sha256},
        "tuned": {"file": Path(tuned).name, "sha256": ct.sha256}}}
    return net_t, provenance, ct.pixel_size_A
