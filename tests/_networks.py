"""Networks the tests pin, beside the shipped one (engine/models).

``V2_MODEL`` is the network shipped until 2026-12-03 (``runs/train_v2``, docs/model.md; FP32 only, so it
runs FP32 on every CPU). The contamination guards (engine.health.material_overlayer's region and per-atom
rule, engine.health.overlayer_hold) act on the false Si a network reads near contamination; the shipped
network, interpolated with the contamination fine-tune, reads few of them on the guards' test frames, so
those tests run on the network whose false Si they were written for. The shipped network's own figures on
the same frames are tested beside them."""

from __future__ import annotations

from pathlib import Path

V2_MODEL = Path(__file__).parent / "data" / "models" / "stemwatch_fcn_v2.onnx"
#: the contamination fine-tune of v2 (``runs/train_contam3``, docs/model.md "Contamination fine-tune"): the
#: shipped network is 0.4 x V2_MODEL + 0.6 x this (``stemwatch export --interpolate``), kept so that the
#: shipped weights can be made again (tests/test_train_interpolate.py)
FINETUNE_MODEL = Path(__file__).parent / "data" / "models" / "stemwatch_fcn_contamination_finetune.onnx"

