"""Rebuild a trainable :class:`~lab.train.network.StemFCN` from an exported ONNX model (no checkpoint needed).

The shipped model is stored only as ONNX (``engine/models/stemwatch_fcn.onnx``): BatchNorm folded into the
convolutions, softmax in the graph. :func:`net_from_onnx` copies the folded convolution weights into a
``StemFCN`` of the architecture in the file's ``stemwatch.architecture`` metadata and sets every BatchNorm
to the identity in eval mode (running mean 0, running variance ``1 - eps``, scale 1, shift = the folded
convolution bias), so the rebuilt net in eval mode computes exactly the ONNX graph's logits.

Training runs BatchNorm on batch statistics, which would normalise away the folded scales. Before
fine-tuning, :func:`calibrate_batchnorm` therefore measures each BatchNorm's input (the convolution
output without bias, in eval mode, i.e. the original network's activations) on a few training batches
and sets ``running_mean`` / ``running_var`` to their per-channel mean / variance, ``weight`` to
``sqrt(var + eps)`` and ``bias`` to ``mean + folded bias``: eval mode stays the same function (to float
rounding), and in training mode a batch whose statistics match the calibration reproduces it too.

``stemwatch train --init engine/models/stemwatch_fcn.onnx`` uses both (``lab.train.training``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def onnx_architecture(path: str | Path) -> dict:
    """``{"widths": [...], "convs": n}`` from the model's ``stemwatch.architecture`` metadata."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    arch = json.loads(meta["stemwatch.architecture"])
    if arch.get("type") != "StemFCN":
        raise ValueError(f"{path}: not a StemFCN model ({arch})")
    return {"widths": [int(w) for w in arch["widths"]], "convs": int(arch["convs"])}


def net_from_onnx(path: str | Path):
    """A :class:`StemFCN` (eval mode) whose eval-mode logits equal the ONNX model's (BatchNorm = identity)."""
    import onnx
    import torch
    from onnx import numpy_helper
    from torch import nn

    from lab.train.network import StemFCN

    arch = onnx_architecture(path)
    net = StemFCN(tuple(arch["widths"]), arch["convs"])
    proto = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    if not any(k.startswith("net.") for k in init):
        raise ValueError(f"{path}: no 'net.*' initializers (an INT8 or otherwise rewritten graph?); give the FP32 file")
    used = set()
    with torch.no_grad():
        for seq in list(net.enc) + list(net.dec):
            prefix = "enc" if any(seq is s for s in net.enc) else "dec"
            idx = [i for i, s in enumerate(net.enc if prefix == "enc" else net.dec) if s is seq][0]
            mods = list(seq)
            for j, m in enumerate(mods):
                if not isinstance(m, nn.Conv2d):
                    continue
                bn = mods[j + 1]
                folded_j = j - sum(isinstance(x, nn.BatchNorm2d) for x in mods[:j])   # BN removed at export
                key = f"net.{prefix}.{idx}.{folded_j}"
                w, b = init[f"{key}.weight"], init[f"{key}.bias"]
                if tuple(w.shape) != tuple(m.weight.shape):
                    raise ValueError(f"{key}: ONNX weight {w.shape} vs network {tuple(m.weight.shape)}")
                m.weight.copy_(torch.from_numpy(np.array(w, np.float32)))
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                bn.weight.fill_(1.0)
                bn.bias.copy_(torch.from_numpy(np.array(b, np.float32)))
                used |= {f"{key}.weight", f"{key}.bias"}
        net.head.weight.copy_(torch.from_numpy(np.array(init["net.head.weight"], np.float32)))
        net.head.bias.copy_(torch.from_numpy(np.array(init["net.head.bias"], np.float32)))
        used |= {"net.head.weight", "net.head.bias"}
    left = sorted(k for k in init if k.startswith("net.") and k not in used)
    if left:
        raise ValueError(f"{path}: initializers not used: {left}")
    return net.eval()


def calibrate_batchnorm(net, batches) -> None:
    """Give every BatchNorm of ``net`` (as from :func:`net_from_onnx`) the statistics of its input over
    ``batches`` (iterable of float32 ``(B, 1, h, w)`` arrays) without changing the eval-mode function."""
    import torch
    from torch import nn

    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    sums = {id(m): [0.0, 0.0, 0] for m in bns}

    def hook(mod, inp, _out):
        z = inp[0].detach().double()
        s = sums[id(mod)]
        s[0] = s[0] + z.sum((0, 2, 3))
        s[1] = s[1] + (z * z).sum((0, 2, 3))
        s[2] += z.shape[0] * z.shape[2] * z.shape[3]

    handles = [m.register_forward_hook(hook) for m in bns]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            for xb in batches:
                net(torch.from_numpy(np.ascontiguousarray(xb, np.float32)))
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        for m in bns:
            s1, s2, n = sums[id(m)]
            if n == 0:
                raise ValueError("calibrate_batchnorm: no batches")
            mean = s1 / n
            var = torch.clamp(s2 / n - mean * mean, min=0.0)
            # current eval function: (z - rm) / sqrt(rv + eps) * w + b; keep it while moving rm, rv to the data's
            scale = m.weight.double() / torch.sqrt(m.running_var.double() + m.eps)
            shift = m.bias.double() - m.running_mean.double() * scale
            new_w = torch.sqrt(var + m.eps) * scale
            new_b = shift + mean * scale
            m.running_mean.copy_(mean.float())
            m.running_var.copy_(var.float())
            m.weight.copy_(new_w.float())
            m.bias.copy_(new_b.float())
    net.train(was_training)
