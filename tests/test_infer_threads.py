"""ONNX Runtime's CPU pool threads sleep between operators unless Config.inference.cpu_spin_wait
(issue 20: a spinning thread held the core the chemistry needs on two shared cores)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.infer.model import DEFAULT_MODEL

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="shipped model missing")


def _spinning(inferencer) -> tuple:
    """The session's allow_spinning entries (None: not set, ONNX Runtime's default: spin)."""
    so = inferencer.backend.session_options
    out = []
    for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
        try:
            out.append(so.get_session_config_entry(key))
        except RuntimeError:
            out.append(None)
    return tuple(out)


def test_pool_threads_sleep_by_default_and_spin_on_request():
    from engine.infer import Inferencer
    from stemwatch.config import Config

    cfg = Config().replace(inference={"backend": "onnx", "threads": 2, "cpu_precision": "fp32"})
    with Inferencer(cfg.inference) as quiet, \
            Inferencer(cfg.replace(inference={"cpu_spin_wait": True}).inference) as spin:
        assert _spinning(quiet) == ("0", "0")
        assert quiet.backend.spin_wait is False and spin.backend.spin_wait is True
        assert _spinning(spin) == (None, None)
        img = np.random.default_rng(0).integers(0, 4000, (64, 64)).astype(np.uint16)
        a, b = quiet.predict(img, 0.2).p, spin.predict(img, 0.2).p
        np.testing.assert_array_equal(a, b)          # thread synchronisation only: the same numbers
