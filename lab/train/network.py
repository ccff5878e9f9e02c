"""The atom-finding network: a compact U-Net-style fully convolutional net (torch).

Input ``(N, 1, H, W)`` float32, a normalised frame on the model grid (see
:mod:`engine.infer.preprocess`); output ``(N, 3, H, W)`` per-pixel class scores in
:data:`engine.types.CLASSES` order (background, C, Si). With ``softmax=True`` (the exported graph)
the output is probabilities; training uses the logits (``softmax=False``).

``H`` and ``W`` must be multiples of ``2 ** len(widths[1:])`` (:attr:`StemFCN.multiple`).

Architecture (``widths=(w0, w1, w2)``): each level is ``convs`` x (3x3 conv -> BatchNorm -> ReLU);
level k>0 starts with a 2x2 max-pool; the decoder upsamples by nearest-neighbour x2, concatenates
the encoder skip and applies ``convs`` x 3x3 conv at the skip's width; a 1x1 conv gives 3 classes.
The deepest level uses dilation ``(1, 2)`` to widen the receptive field cheaply. BatchNorm is folded
into the convolutions at export, so the ONNX graph is only Conv / Relu / MaxPool / Resize / Concat /
Softmax.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


def _block(cin: int, cout: int, n: int, dilations=None) -> nn.Sequential:
    layers: list[nn.Module] = []
    dilations = dilations or [1] * n
    for i in range(n):
        d = dilations[i]
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=d, dilation=d, bias=False),
                   nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class StemFCN(nn.Module):
    """Compact U-Net. ``widths``: channels per level (len >= 2); ``convs``: 3x3 convs per block."""

    def __init__(self, widths: tuple[int, ...] = (12, 24, 32), convs: int = 2, n_classes: int = 3,
                 softmax: bool = False):
        super().__init__()
        if len(widths) < 2:
            raise ValueError("widths needs at least two levels")
        self.widths = tuple(int(w) for w in widths)
        self.convs = int(convs)
        self.softmax = softmax
        self.enc = nn.ModuleList()
        cin = 1
        for k, w in enumerate(self.widths):
            dil = [1 + (i % 2) for i in range(convs)] if k == len(self.widths) - 1 else None
            self.enc.append(_block(cin, w, convs, dil))
            cin = w
        self.dec = nn.ModuleList()
        for k in range(len(self.widths) - 2, -1, -1):
            self.dec.append(_block(self.widths[k + 1] + self.widths[k], self.widths[k], convs))
        self.head = nn.Conv2d(self.widths[0], n_classes, 1)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this."""
        return 2 ** (len(self.widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for k, block in enumerate(self.enc):
            if k > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.dec:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(torch.cat([x, skips.pop()], dim=1))
        x = self.head(x)
        if self.softmax:
            x = torch.softmax(x, dim=1)
        return x

    def receptive_radius_px(self) -> int:
        """Half-width (model px) of the receptive field: how far a pixel's output looks."""
        r, stride = 0, 1
        for k in range(len(self.widths)):
            if k > 0:
                r += stride  # 2x2 pool
                stride *= 2
            dil = [1 + (i % 2) for i in range(self.convs)] if k == len(self.widths) - 1 else [1] * self.convs
            r += sum(dil) * stride
        for k in range(len(self.widths) - 2, -1, -1):
            stride //= 2
            r += self.convs * stride
        return int(r)

    def n_params(self) -> int:
        return int(sum(p.numel() for p in self.parameters()))


def macs_per_pixel(net: StemFCN) -> float:
    """Multiply-accumulates per input pixel (convolutions only; the dominant cost)."""
    total = 0.0
    scale = 1.0
    for k, block in enumerate(net.enc):
        if k > 0:
            scale /= 4.0
        for m in block:
            if isinstance(m, nn.Conv2d):
                total += scale * m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1]
    for block in net.dec:
        scale *= 4.0
        for m in block:
            if isinstance(m, nn.Conv2d):
                total += scale * m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1]
    total += net.head.in_channels * net.head.out_channels
    return total


def fold_batchnorm(net: StemFCN) -> StemFCN:
    """Return a copy in eval mode with every BatchNorm folded into the preceding conv (for export)."""
    import copy

    net = copy.deepcopy(net).eval()
    for seq in list(net.enc) + list(net.dec):
        mods = list(seq)
        new: list[nn.Module] = []
        i = 0
        while i < len(mods):
            m = mods[i]
            if isinstance(m, nn.Conv2d) and i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d):
                bn = mods[i + 1]
                conv = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, padding=m.padding,
                                 dilation=m.dilation, bias=True)
                with torch.no_grad():
                    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                    conv.weight.copy_(m.weight * s[:, None, None, None])
                    b = m.bias if m.bias is not None else torch.zeros_like(bn.running_mean)
                    conv.bias.copy_((b - bn.running_mean) * s + bn.bias)
                new.append(conv)
                i += 2
            else:
                new.append(m)
                i += 1
        seq._modules.clear()
        for j, m in enumerate(new):
            seq.add_module(str(j), m)
    return net
