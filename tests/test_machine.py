"""The machine description reports label their numbers with."""
from __future__ import annotations

from kdbundle.engine import machine


def test_describe_names_the_cpu_and_the_usable_cores():
    text = machine.describe()
    assert text == f"{machine.cpu_model()}, {machine.cores()} cores"
    assert machine.cpu_model() and 1 <= machine.cores()
    flags = open("/proc/cpuinfo").read().split()
    assert machine.has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)
