"""Which precision a run trains in, on a CPU and on a GPU (pure: no model, no device needed)."""
from __future__ import annotations

from kdbundle.engine.student.recipe import precision_args


def test_the_configured_precision_holds_on_a_gpu_too():
    # A GPU used to train in bf16 whenever it could, whatever the run recorded; fp32 there now means fp32
    # (with TF32 matmuls on Ampere or newer, which keep fp32's range).
    assert precision_args("fp32", gpu=(True, 9), cpu_native_bf16=False) == ({"bf16": False, "tf32": True}, None)
    assert precision_args("fp32", gpu=(False, 7), cpu_native_bf16=False) == ({"bf16": False, "tf32": None}, None)
    assert precision_args("bf16", gpu=(True, 9), cpu_native_bf16=False) == ({"bf16": True, "tf32": None}, None)
    args, warning = precision_args("bf16", gpu=(False, 7), cpu_native_bf16=False)
    assert args == {"bf16": False, "tf32": None} and "no bf16" in warning
    assert precision_args("bf16", gpu=None, cpu_native_bf16=True) == ({"bf16": True}, None)
    args, warning = precision_args("bf16", gpu=None, cpu_native_bf16=False)
    assert args == {"bf16": True} and "emulated" in warning
    assert precision_args("fp32", gpu=None, cpu_native_bf16=False) == ({"bf16": False}, None)
