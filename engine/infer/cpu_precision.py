"""Which network file the ONNX Runtime CPU backend runs: the FP32 reference or its INT8 (QDQ) variant.

``Config.inference.cpu_precision`` (``--precision``): ``fp32`` always runs the FP32 model (the
reference); ``int8`` runs ``<model>_int8.onnx`` next to it (made by ``stemwatch export --int8``) and
fails with a clear message when that file is missing or was quantised from another FP32 model;
``auto`` (default) picks INT8 only where it is both faster and computed exactly:

1. no INT8 file beside the model, or one made from another FP32 model -> FP32;
2. the CPU lacks AVX2 (``/proc/cpuinfo`` flags) -> FP32: ONNX Runtime's integer kernels then have
   no fast path;
3. the CPU has VNNI (``avx512_vnni``, ``avx_vnni``) or AMX-INT8 -> INT8: one instruction per 4-way
   u8 x s8 dot product, no intermediate saturation (measured 2.0-2.5x less network time than FP32 on the
   project's AVX-512-VNNI machine, see ``stemwatch bench infer``);
4. AVX2 or AVX-512 without VNNI -> FP32. There ONNX Runtime's u8 x s8 kernels add pairs of products
   in 16 bits (``vpmaddubsw``), which can saturate (microsoft/onnxruntime#12088), so the INT8 maps could
   differ from the ones measured with VNNI; and the choice must not depend on the machine's load. (An
   earlier rule timed both sessions at start-up: the same file analysed twice on one machine could then
   run different networks.) ``--precision int8`` still runs INT8 there, as asked.

Nothing is cached between calls or globally: each backend construction decides afresh, and the
decision and why are in the backend's ``description`` / the ``Inferencer.selection_reason``.
TensorRT never uses the INT8 file (it builds FP16 or FP32 engines from the FP32 / FP16 graphs).
"""

from __future__ import annotations

import json
from pathlib import Path

PRECISIONS = ("auto", "fp32", "int8")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8")


class Int8Unavailable(FileNotFoundError):
    """``int8`` was requested but no matching INT8 model is beside the FP32 one (a FileNotFoundError, so
    the commands report it like a missing model file: one line, exit status 2)."""


def int8_path(fp32_path: str | Path) -> Path:
    """``x.onnx`` -> ``x_int8.onnx``: where the INT8 variant of a model lives."""
    p = Path(fp32_path)
    return p.with_name(p.stem + "_int8.onnx")


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU feature flags of the first processor in ``/proc/cpuinfo`` (empty where unreadable)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def int8_matches(int8_file: Path, fp32_sha256: str) -> tuple[bool, str]:
    """Whether ``int8_file`` exists and was quantised from the FP32 model with hash ``fp32_sha256``."""
    from engine.infer.model import ModelContract

    if not int8_file.is_file():
        return False, f"no INT8 model {int8_file.name} beside the FP32 one (make it with `stemwatch export --int8`)"
    try:
        meta = ModelContract.load(int8_file).metadata
        recipe = json.loads(meta.get("stemwatch.quantisation", "{}"))
    except (ValueError, OSError) as exc:
        return False, f"INT8 model {int8_file.name} unreadable: {exc}"
    if meta.get("stemwatch.precision") != "int8":
        return False, f"{int8_file.name} is not marked stemwatch.precision=int8"
    if recipe.get("fp32_sha256") != fp32_sha256:
        return False, (f"{int8_file.name} was quantised from another FP32 model (re-run `stemwatch export --int8`)")
    return True, f"{int8_file.name}"


def choose(requested: str, int8_ok: tuple[bool, str], flags: frozenset[str]) -> tuple[str, str]:
    """``(precision, reason)`` by the rules of the module docstring: from the request, the INT8 file's
    check and the CPU flags alone, so the same machine always makes the same choice."""
    if requested not in PRECISIONS:
        raise ValueError(f"CPU precision must be one of {PRECISIONS}, got {requested!r}")
    ok, why = int8_ok
    if requested == "fp32":
        return "fp32", "fp32 requested"
    if requested == "int8":
        if not ok:
            raise Int8Unavailable(f"--precision int8: {why}")
        return "int8", f"int8 requested ({why})"
    if not ok:
        return "fp32", f"auto: {why} -> fp32"
    if "avx2" not in flags:
        return "fp32", "auto: CPU without AVX2 -> fp32"
    vnni = sorted(f for f in VNNI_FLAGS if f in flags)
    if vnni:
        return "int8", f"auto: CPU has {'/'.join(vnni)} -> int8"
    return "fp32", "auto: AVX2 without VNNI (u8 x s8 products may saturate there) -> fp32"
