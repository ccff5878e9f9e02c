"""Static INT8 (QDQ) variant of the shipped FP32 model, for the ONNX Runtime CPU backend (issue 20).

``quantize_int8(fp32, out)`` runs ONNX Runtime's ``quantize_static`` in QDQ format: weights INT8
(symmetric, per output channel), activations UINT8 (asymmetric; U8S8 is the x86 kernels' native form:
with INT8 activations ONNX Runtime converted some Q/DQ pairs and left three convolutions and the
pooling in float), one Q/DQ pair per consumer (so a tensor feeding both a pool and a skip
concatenation still fuses into ``QLinearConv``), the stem and head convolutions kept in float (the
stem's input is the normalised frame, whose outliers made a MinMax input scale of 0.45, i.e. the
whole lattice contrast in two or three levels; the head's output is the logits), activation ranges
by the 99.999th percentile (MinMax and Entropy moved more low-dose Si, see docs/model.md), calibrated
on simulated frames drawn the
way training draws them (:func:`calibration_inputs`: frame pixel size 0.05-0.2 A/px log-uniform,
the simulator's full dose range 1e3-1e6 e/A^2 with 40 % of the frames from 1e3-3e4, Si density
0.05-1.2 /nm^2, every defect kind, contamination and adatoms as drawn), resampled and normalised
exactly as at inference. The calibration stream is ``SeedSequence([seed, 4])`` (training uses
``k`` 1..3 of seed 0, the held-out table its own seed), so neither training nor evaluation frames
are calibrated on. The softmax stays in float (the probabilities keep their resolution at the 0.5
threshold); the graph input and output stay float32, so the file honours the same contract.

Used by ``stemwatch export --int8``; needs onnx and onnxruntime (the ``train`` extra has onnx).
TensorRT never reads this file (it builds FP16 from the FP32 graph, see
:mod:`engine.infer.probe`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

#: every convolution but the head gets a multiple of this many output channels (zero filters)
CHANNEL_MULTIPLE = 8
#: spawn key of the calibration stream (training: 1 bank, 2 augmentation, 3 validation)
CALIBRATION_STREAM = 4
METHODS = ("minmax", "entropy", "percentile")


def calibration_inputs(contract, n_frames: int = 24, grid_side_px: int = 160, seed: int = 0,
                       low_dose_fraction: float = 0.4, progress=None) -> list[np.ndarray]:
    """``n_frames`` normalised network inputs float32 ``(1, 1, s, s)`` (``s`` = one multiple below
    ``grid_side_px``, the same for all: histogram calibrators need one shape) from simulated frames
    over the training ranges (see the module docstring). Deterministic for ``seed``."""
    from engine.infer.preprocess import normalise, pad_to_multiple
    from lab.train.data import make_bank_item

    rng = np.random.default_rng(np.random.SeedSequence([seed, CALIBRATION_STREAM]))
    side = (grid_side_px // contract.multiple - 1) * contract.multiple
    out = []
    for i in range(n_frames):
        zoom = float(np.exp(rng.uniform(np.log(0.9), np.log(1.12))))
        si = float(np.exp(rng.uniform(np.log(0.05), np.log(1.2))))
        over = {"si_per_nm2": si}
        if rng.random() < low_dose_fraction:
            over["dose_range"] = (1e3, 3e4)
        item = make_bank_item(rng, contract.pixel_size_A * zoom, grid_side_px, (0.05, 0.2), **over)
        x = normalise(item.image, contract.normalisation)
        xp, _ = pad_to_multiple(x, contract.multiple, side)
        out.append(np.ascontiguousarray(xp[None, None, :side, :side], dtype=np.float32))  # one shape for all
        if progress:
            progress(i + 1, n_frames)
    return out


class _Reader:
    """``CalibrationDataReader`` over a list of inputs (subclassed lazily: onnxruntime is heavy)."""

    def __new__(cls, inputs, input_name):
        from onnxruntime.quantization import CalibrationDataReader

        class Reader(CalibrationDataReader):
            def __init__(self):
                self._it = iter(inputs)

            def get_next(self):
                x = next(self._it, None)
                return None if x is None else {input_name: x}

            def rewind(self):
                self._it = iter(inputs)

        return Reader()


def conv_nodes(model_path: str | Path) -> list[str]:
    """Names of the Conv nodes of an ONNX graph, in graph order (first = stem, last = head)."""
    import onnx

    return [n.name for n in onnx.load(str(model_path)).graph.node if n.op_type == "Conv"]


def quantize_int8(fp32_path: str | Path, out_path: str | Path, *, n_frames: int = 24, grid_side_px: int = 160,
                  seed: int = 0, method: str = "percentile", per_channel: bool = True, percentile: float = 99.999,
                  exclude: tuple[str, ...] = ("first", "last"), activations: str = "uint8",
                  dedicated_pairs: bool = True, progress=None) -> dict:
    """Write the QDQ INT8 model of ``fp32_path`` to ``out_path``; returns the recipe (also stored in the
    file's ``stemwatch.quantisation`` metadata). ``exclude``: ``"first"`` and/or ``"last"`` keep the
    stem / head convolution in float; Conv node names keep those."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from engine.infer.model import ModelContract
    from lab.train.export import set_metadata

    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    contract = ModelContract.load(fp32_path)
    t0 = time.time()
    inputs = calibration_inputs(contract, n_frames, grid_side_px, seed, progress=progress)
    t_sim = time.time() - t0
    convs = conv_nodes(fp32_path)
    unknown = [x for x in exclude if x not in ("first", "last") and x not in convs]
    if unknown:
        raise ValueError(f"exclude: {unknown} are neither 'first'/'last' nor Conv nodes of {fp32_path.name} ({convs})")
    skip = [convs[0]] * ("first" in exclude) + [x for x in exclude if x in convs] + [convs[-1]] * ("last" in exclude)
    cal = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}[method]
    extra = {"ActivationSymmetric": False, "WeightSymmetric": True, "DedicatedQDQPair": bool(dedicated_pairs)}
    if method == "percentile":
        extra["CalibPercentile"] = float(percentile)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_out = Path(tmp) / "int8.onnx"
        quantize_static(str(fp32_path), str(tmp_out), _Reader(inputs, contract.input_name),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                        weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv", "MaxPool", "Resize", "Concat", "Relu"],
                        nodes_to_exclude=skip or None, calibrate_method=cal, extra_options=extra,
                        calibration_providers=["CPUExecutionProvider"])
        proto = onnx.load(str(tmp_out))
    tail = softmax_tail(proto)
    padded = pad_channels(proto, CHANNEL_MULTIPLE)
    recipe = {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "weights": "int8",
              "activations": activations, "dedicated_qdq_pairs": bool(dedicated_pairs),
              "per_channel": bool(per_channel), "method": method,
              **({"percentile": float(percentile)} if method == "percentile" else {}),
              "calibration_frames": int(n_frames), "calibration_grid_px": int(grid_side_px),
              "calibration_seed": [int(seed), CALIBRATION_STREAM], "float_convs": skip,
              "fp32_sha256": contract.sha256, "calibration_s": round(time.time() - t0, 1),
              "simulation_s": round(t_sim, 1), "softmax": tail,
              "channel_padding": {"multiple": CHANNEL_MULTIPLE, "convs": padded}}
    import onnxruntime

    recipe["onnxruntime"] = onnxruntime.__version__
    meta = dict(contract.metadata)
    meta["stemwatch.precision"] = "int8"
    meta["stemwatch.quantisation"] = json.dumps(recipe)
    set_metadata(proto, meta)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmpname = tempfile.mkstemp(dir=out_path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(proto.SerializeToString())
    os.chmod(tmpname, 0o644)
    os.replace(tmpname, out_path)
    return recipe


def softmax_tail(proto) -> str:
    """Replace the graph's final ``Softmax`` over the class axis (axis 1 of NCHW) with the same function
    in five element-wise / reduction nodes: ReduceMax, Sub, Exp, ReduceSum, Div (in place, float32).

    ONNX Runtime's CPU Softmax works over the last axis only; over axis 1 it transposes to NHWC and
    back, which cost 2.7 of 21.5 ms of the INT8 network on a 256x256 grid (one thread, ``ort``
    profiling). The five nodes compute ``exp(x - max) / sum`` exactly as the softmax definition does
    (outputs within 3e-8 of the Softmax node's). Returns what was done, for the recipe."""
    from onnx import TensorProto, helper

    g = proto.graph
    idx = [i for i, n in enumerate(g.node) if n.op_type == "Softmax"]
    if len(idx) != 1:
        raise ValueError(f"expected one Softmax node, found {len(idx)}")
    node = g.node[idx[0]]
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    if axis != 1:
        raise ValueError(f"expected the Softmax over the class axis 1, found axis {axis}")
    x, y = node.input[0], node.output[0]
    g.initializer.append(helper.make_tensor("softmax_axes", TensorProto.INT64, [1], [1]))
    new = [helper.make_node("ReduceMax", [x, "softmax_axes"], ["softmax_max"], keepdims=1, name="softmax_max"),
           helper.make_node("Sub", [x, "softmax_max"], ["softmax_shifted"], name="softmax_shift"),
           helper.make_node("Exp", ["softmax_shifted"], ["softmax_exp"], name="softmax_exp"),
           helper.make_node("ReduceSum", ["softmax_exp", "softmax_axes"], ["softmax_sum"], keepdims=1,
                            name="softmax_sum"),
           helper.make_node("Div", ["softmax_exp", "softmax_sum"], [y], name="softmax_div")]
    del g.node[idx[0]]
    for k, n in enumerate(new):
        g.node.insert(idx[0] + k, n)
    return "ReduceMax-Sub-Exp-ReduceSum-Div over axis 1 (in place of Softmax)"


#: nodes a tensor's channels pass through unchanged (one channel in, the same channel out)
_PER_CHANNEL = ("Relu", "QuantizeLinear", "DequantizeLinear", "MaxPool", "Resize")


def pad_channels(proto, multiple: int = CHANNEL_MULTIPLE) -> list[list]:
    """Give every convolution but the head a multiple of ``multiple`` output channels (in place).

    The new filters are zero with a zero bias, so their channels hold exactly zero (the activation's
    zero point once quantised) through ReLU, pooling, up-sampling and concatenation; every later
    convolution gets zero weights for them, at their place in its input (a concatenation shifts
    them). The original channels' integer arithmetic is unchanged, so the probabilities agree with
    the unpadded graph's to float rounding (3e-7). Why: ONNX Runtime's x86 ``QLinearConv`` runs a
    convolution with 12 output channels 2-5x slower per multiply-accumulate than one with 16 (the
    three 12-channel ones at the full model grid took 9.4 of 15 ms of the INT8 network on a 256x256
    grid, one thread); padded, the network takes a third less time (docs/model.md).

    Weights come from an initializer or through a ``DequantizeLinear`` (per output channel, with its
    scale and zero point, and the bias's); the graph runs Conv / Relu / Q / DQ / MaxPool / Resize /
    Concat over axis 1 from one single-channel input. Returns ``[node, channels, padded]`` per
    padded convolution."""
    from onnx import numpy_helper

    g = proto.graph
    init = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    get = lambda name: numpy_helper.to_array(init[name])          # noqa: E731
    put = lambda name, a: init[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(a), name))  # noqa: E731

    def grow(name, n_new, fill):
        a = get(name)
        put(name, np.concatenate([a, np.full(n_new - len(a), fill, a.dtype)]))

    convs = [n for n in g.node if n.op_type == "Conv"]
    head = convs[-1].name
    # each activation tensor: (its channels now, where its original channels sit among them)
    channels = {g.input[0].name: (1, np.arange(1))}
    padded = []
    for n in g.node:
        if n.op_type == "Conv":
            dq = None if n.input[1] in init else producer[n.input[1]]
            wname = n.input[1] if dq is None else dq.input[0]
            w = get(wname)
            c_in, where = channels[n.input[0]]
            if c_in != w.shape[1]:
                wide = np.zeros((w.shape[0], c_in) + w.shape[2:], w.dtype)
                wide[:, where] = w
                w = wide
            c_out = c_new = w.shape[0]
            if n.name != head and c_out % multiple:
                c_new = -(-c_out // multiple) * multiple
                w = np.concatenate([w, np.zeros((c_new - c_out,) + w.shape[1:], w.dtype)])
                if dq is None:
                    grow(n.input[2], c_new, 0)
                else:
                    bias_dq = producer[n.input[2]]
                    grow(dq.input[1], c_new, get(dq.input[1]).mean())       # weight scale: any > 0
                    grow(dq.input[2], c_new, 0)
                    grow(bias_dq.input[0], c_new, 0)
                    grow(bias_dq.input[1], c_new, get(bias_dq.input[1]).mean())
                padded.append([n.name, int(c_out), int(c_new)])
            put(wname, w)
            if n.name != head:                  # nothing after the head reads channels
                channels[n.output[0]] = (c_new, np.arange(c_out))
        elif n.op_type in _PER_CHANNEL:
            if n.input[0] in channels:
                for o in n.output:
                    channels[o] = channels[n.input[0]]
        elif n.op_type == "Concat":
            axis = next(a.i for a in n.attribute if a.name == "axis")
            if axis != 1:
                raise ValueError(f"{n.name}: concatenation over axis {axis}, expected 1")
            total, where = 0, []
            for i in n.input:
                c, at = channels[i]
                where.append(at + total)
                total += c
            channels[n.output[0]] = (total, np.concatenate(where))
        elif any(i in channels for i in n.input):
            raise ValueError(f"pad_channels: no rule for {n.op_type} node {n.name}")
    del g.value_info[:]                 # intermediate shapes changed: ONNX Runtime infers them again
    return padded


__all__ = ["calibration_inputs", "quantize_int8", "conv_nodes", "softmax_tail", "pad_channels", "METHODS"]
