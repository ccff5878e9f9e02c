"""Without tensorrt and pycuda the package imports and analyses; no removed TensorRT API in the source."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import tokenize
from pathlib import Path

import pytest

from engine.infer.model import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "stemwatch", "streamer", "dashboard")

#: Identifiers removed in TensorRT 10 or 11 (or never to be used by us), anywhere in code.
REMOVED_NAMES = {
    "EXPLICIT_BATCH", "execute_async_v2", "execute_async", "build_engine", "max_workspace_size",
    "platform_has_fast_fp16", "platform_has_fast_int8", "num_bindings", "get_binding_shape", "binding_is_input",
    "set_binding_shape", "get_binding_index", "get_binding_name", "get_binding_dtype", "max_batch_size",
    "OBEY_PRECISION_CONSTRAINTS", "autoinit", "device_memory_size",
}
#: BuilderFlag members removed in TensorRT 11.
REMOVED_FLAGS = {"FP16", "INT8", "BF16", "FP8", "INT4", "FP4", "PREFER_PRECISION_CONSTRAINTS"}


def _code_tokens(path: Path):
    """NAME/OP tokens of a Python file (comments and strings, docstrings included, skipped)."""
    toks = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return [(t.string, t.start[0]) for t in toks if t.type in (tokenize.NAME, tokenize.OP)]


def test_no_removed_tensorrt_apis_in_source():
    offenders = []
    files = [p for pkg in PACKAGES if (ROOT / pkg).is_dir() for p in (ROOT / pkg).rglob("*.py")]
    assert any(p.name == "tensorrt_backend.py" for p in files)
    for path in files:
        toks = _code_tokens(path)
        for i, (s, line) in enumerate(toks):
            if s in REMOVED_NAMES:
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {s}")
            if s == "BuilderFlag" and i + 2 < len(toks) and toks[i + 1][0] == "." and toks[i + 2][0] in REMOVED_FLAGS:
                offenders.append(f"{path.relative_to(ROOT)}:{line}: BuilderFlag.{toks[i + 2][0]}")
            # `with trt.Builder(...) as b:` context managers are deprecated in TensorRT 10/11
            if s == "with" and i + 2 < len(toks) and toks[i + 1][0] in ("trt", "tensorrt") and toks[i + 2][0] == ".":
                offenders.append(f"{path.relative_to(ROOT)}:{line}: with trt.* context manager")
    assert not offenders, "removed TensorRT APIs used:\n" + "\n".join(offenders)


def test_grep_catches_a_removed_api(tmp_path):
    """The scanner itself works (so the test above can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("flag = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)\n"
                   "config.set_flag(trt.BuilderFlag.FP16)\n# EXPLICIT_BATCH in a comment is fine\n")
    toks = _code_tokens(bad)
    names = [s for s, _ in toks]
    assert "EXPLICIT_BATCH" in names and names.count("EXPLICIT_BATCH") == 1 and "FP16" in names


def test_light_modules_do_not_import_heavy_libraries():
    code = textwrap.dedent("""
        import sys
        import engine.infer, engine.infer.cli, engine.infer.probe, engine.infer.model
        heavy = [m for m in ("tensorrt", "pycuda", "torch", "onnxruntime", "onnx") if m in sys.modules]
        print(heavy)
        assert not heavy, heavy
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="shipped model missing")
def test_package_imports_and_analyses_without_tensorrt_and_pycuda():
    code = textwrap.dedent("""
        import sys
        sys.modules["tensorrt"] = None        # import tensorrt -> ImportError
        sys.modules["pycuda"] = None
        sys.modules["pycuda.driver"] = None
        import numpy as np
        import engine.infer.tensorrt_backend   # importable: tensorrt is only imported lazily
        from engine.infer import Inferencer
        from engine.infer.cli import doctor_report
        from stemwatch.config import InferenceConfig
        with Inferencer(InferenceConfig(backend="auto")) as inf:
            assert inf.backend_name == "onnxruntime", inf.backend_name
            assert "tensorrt not importable" in inf.selection_reason, inf.selection_reason
            frame = np.random.default_rng(0).poisson(20, (200, 180)).astype(np.uint16)
            p = inf.predict(frame, 0.1)
            assert p.p.shape == (3, 100, 90)
        rep = doctor_report()
        assert "torch" not in sys.modules and rep["torch"]      # its version without importing it
        assert rep["backends"]["tensorrt"]["available"] is False
        assert rep["backends"]["onnx"]["available"] is True
        try:
            from engine.infer.probe import select_backend
            select_backend("tensorrt")
        except RuntimeError as exc:
            assert "not available" in str(exc)
        else:
            raise AssertionError("tensorrt backend must refuse to start")
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_doctor_command_runs():
    out = subprocess.run([sys.executable, "-m", "stemwatch", "doctor"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "tensorrt" in out.stdout and "onnx" in out.stdout and "auto_selects" in out.stdout
