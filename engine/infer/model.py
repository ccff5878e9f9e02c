"""The shipped model and its contract, read from the ONNX file's metadata without any ONNX library.

Contract keys written by :mod:`lab.train.export` into ``ModelProto.metadata_props``:

* ``stemwatch.classes``: JSON list, must equal :data:`engine.types.CLASSES`;
* ``stemwatch.pixel_size_A``: the model grid's angstrom per pixel;
* ``stemwatch.normalisation``: JSON recipe (see :mod:`engine.infer.preprocess`);
* ``stemwatch.multiple``: input sides must be multiples of this;
* ``stemwatch.receptive_radius_px``: how far (model px) an output pixel looks; tiles overlap >= 2x;
* ``stemwatch.input`` / ``stemwatch.output``: tensor names; plus free-form training provenance.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from engine.types import CLASSES

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = MODELS_DIR / "stemwatch_fcn.onnx"
DEFAULT_MODEL_FP16 = MODELS_DIR / "stemwatch_fcn_fp16.onnx"


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: memoryview):
    """Yield ``(field_number, wire_type, value)`` of one protobuf message (value: int or memoryview)."""
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        fnum, wt = tag >> 3, tag & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 1:
            v, i = bytes(buf[i:i + 8]), i + 8
        elif wt == 2:
            n, i = _varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 5:
            v, i = bytes(buf[i:i + 4]), i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        if i > len(buf):
            raise ValueError("truncated protobuf message")
        yield fnum, wt, v


def read_onnx_metadata(data: bytes) -> dict[str, str]:
    """``metadata_props`` (field 14 of ``onnx.ModelProto``) of serialised ONNX bytes, as a dict."""
    meta: dict[str, str] = {}
    for fnum, wt, v in _fields(memoryview(data)):
        if fnum == 14 and wt == 2:
            key = value = ""
            for f2, wt2, v2 in _fields(v):
                if f2 == 1 and wt2 == 2:
                    key = bytes(v2).decode("utf-8")
                elif f2 == 2 and wt2 == 2:
                    value = bytes(v2).decode("utf-8")
            meta[key] = value
    return meta


@dataclass(frozen=True)
class ModelContract:
    """What the network expects and returns (from the ONNX metadata)."""

    path: Path
    sha256: str
    classes: tuple[str, ...]
    pixel_size_A: float
    normalisation: dict
    multiple: int
    receptive_radius_px: int
    input_name: str
    output_name: str
    metadata: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "ModelContract":
        """Read and validate the contract of the ONNX model at ``path`` (default: the shipped one)."""
        p = Path(path) if path is not None else DEFAULT_MODEL
        if not p.is_file():
            raise FileNotFoundError(
                f"model file {p} not found; the shipped model lives in {MODELS_DIR} "
                "(train and export one with `stemwatch train`)")
        data = p.read_bytes()
        try:
            meta = read_onnx_metadata(data)
        except ValueError as exc:
            raise ValueError(f"{p} is not a readable ONNX file: {exc}") from exc
        missing = [k for k in ("stemwatch.classes", "stemwatch.pixel_size_A", "stemwatch.normalisation",
                               "stemwatch.multiple") if k not in meta]
        if missing:
            raise ValueError(f"{p} lacks the stemwatch model contract in its metadata: missing {missing}")
        classes = tuple(json.loads(meta["stemwatch.classes"]))
        if classes != CLASSES:
            raise ValueError(f"{p}: model classes {classes} != expected {CLASSES}")
        return cls(
            path=p,
            sha256=hashlib.sha256(data).hexdigest(),
            classes=classes,
            pixel_size_A=float(meta["stemwatch.pixel_size_A"]),
            normalisation=json.loads(meta["stemwatch.normalisation"]),
            multiple=int(meta["stemwatch.multiple"]),
            receptive_radius_px=int(meta.get("stemwatch.receptive_radius_px", "32")),
            input_name=meta.get("stemwatch.input", "input"),
            output_name=meta.get("stemwatch.output", "probabilities"),
            metadata=meta,
        )
