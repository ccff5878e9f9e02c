"""Export a trained :class:`~lab.train.network.StemFCN` to the shipped ONNX files.

* FP32 model: BatchNorm folded, softmax inside the graph, opset 18, dynamic H and W, named I/O
  (``input`` float32 (1, 1, H, W) -> ``probabilities`` float32 (1, 3, H, W)), weights inline (one
  file, no ``.onnx.data``), and the model contract in ``metadata_props`` (see
  :mod:`engine.infer.model`).
* FP16 variant (for TensorRT, which builds strongly typed networks from it): FP16 weights and
  activations, FP32 input and output (two Casts), softmax in FP32.

Needs torch, onnx and onnxscript (the ``train`` extra).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"


def _wrap(net, fp16: bool):
    import torch
    from torch import nn

    from lab.train.network import fold_batchnorm

    folded = fold_batchnorm(net)
    folded.softmax = False

    class Exported(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = folded.half() if fp16 else folded

        def forward(self, x):
            if fp16:
                return torch.softmax(self.net(x.half()).float(), dim=1)
            return torch.softmax(self.net(x), dim=1)

    return Exported().eval()


def export_onnx(net, out_path: str | Path, pixel_size_A: float, normalisation: dict, *, fp16: bool = False,
                extra_metadata: dict | None = None) -> Path:
    """Write ``net`` as ONNX to ``out_path`` with the stemwatch contract; returns the path."""
    import onnx
    import torch
    from torch.export import Dim

    from lab.train.network import macs_per_pixel
    from engine.types import CLASSES

    out_path = Path(out_path)
    model = _wrap(net, fp16)
    m = net.multiple
    x = torch.zeros(1, 1, 8 * m, 8 * m)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(model, (x,), str(tmp_path), dynamo=True, external_data=False,
                              opset_version=OPSET, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_shapes={"x": {2: Dim.DYNAMIC, 3: Dim.DYNAMIC}}, verbose=False)
        if any(p.name != "model.onnx" for p in Path(tmp).iterdir()):
            raise RuntimeError("ONNX export wrote external data files; expected a single file")
        proto = onnx.load(str(tmp_path))
    meta = {
        "stemwatch.classes": json.dumps(list(CLASSES)),
        "stemwatch.pixel_size_A": repr(float(pixel_size_A)),
        "stemwatch.normalisation": json.dumps(normalisation),
        "stemwatch.multiple": str(int(m)),
        "stemwatch.receptive_radius_px": str(int(net.receptive_radius_px())),
        "stemwatch.macs_per_pixel": repr(float(macs_per_pixel(net))),
        "stemwatch.params": str(int(net.n_params())),
        "stemwatch.input": INPUT_NAME,
        "stemwatch.output": OUTPUT_NAME,
        "stemwatch.precision": "fp16" if fp16 else "fp32",
        "stemwatch.architecture": json.dumps({"type": "StemFCN", "widths": list(net.widths), "convs": net.convs}),
        "stemwatch.heavy_atoms": "atoms heavier than Si are labelled in the Si channel ('heavy'); "
                                 "engine.chem separates Si from other species by raw intensity",
    }
    for k, v in (extra_metadata or {}).items():
        meta[f"stemwatch.{k}"] = v if isinstance(v, str) else json.dumps(v)
    set_metadata(proto, meta)
    data = proto.SerializeToString()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmpname = tempfile.mkstemp(dir=out_path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmpname, 0o644)
    os.replace(tmpname, out_path)
    return out_path


def set_metadata(proto, meta: dict) -> None:
    """Replace the ONNX model's metadata with ``meta`` (str -> str), name stemwatch its producer and
    check the model."""
    import onnx

    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "stemwatch"
    onnx.checker.check_model(proto)


def export_both(net, out_dir: str | Path, pixel_size_A: float, normalisation: dict,
                extra_metadata: dict | None = None, stem: str = "stemwatch_fcn") -> tuple[Path, Path]:
    """Write ``<stem>.onnx`` (FP32) and ``<stem>_fp16.onnx`` into ``out_dir``."""
    out_dir = Path(out_dir)
    p32 = export_onnx(net, out_dir / f"{stem}.onnx", pixel_size_A, normalisation, extra_metadata=extra_metadata)
    p16 = export_onnx(net, out_dir / f"{stem}_fp16.onnx", pixel_size_A, normalisation, fp16=True,
                      extra_metadata=extra_metadata)
    return p32, p16


def torch_reference(net, x: np.ndarray) -> np.ndarray:
    """Probabilities from the torch model (eval mode, BN folded) for a float32 (1, 1, h, w) input."""
    import torch

    model = _wrap(net, fp16=False)
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def onnx_bytes_single_file(path: str | Path) -> bool:
    """True when the ONNX file has no external-data references."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    proto = onnx.load(str(path), load_external_data=False)
    return not any(uses_external_data(t) for t in proto.graph.initializer)


