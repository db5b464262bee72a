"""The CPU class the course gives its timings for: the CPU's flags and torch's kernels."""

import pytest
import torch

from helpers import models

FLAGS = {
    "Xeon with AMX": "fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile",
    "Zen 4": "fpu avx2 avx512f avx512_bf16 avx512_vnni",
    "Skylake-SP": "fpu avx2 avx512f avx512dq",
    "Zen 1": "fpu sse4_2 avx avx2 fma",
    "old Atom": "fpu sse4_2",
}


def _machine(monkeypatch, flags: str, capability: str = "AVX512"):
    cpuinfo = f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n"
    monkeypatch.setattr(models.Path, "read_text", lambda self, *a, **k: cpuinfo)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)


@pytest.mark.parametrize(
    ("machine", "expected", "bf16"),
    [
        ("Xeon with AMX", "AMX-BF16", True),
        ("Zen 4", "AVX-512 BF16", True),
        ("Skylake-SP", "AVX-512", False),
        ("Zen 1", "AVX2", False),
        ("old Atom", "other", False),
    ],
)
def test_cpu_class_follows_the_flags(monkeypatch, machine, expected, bf16):
    _machine(monkeypatch, FLAGS[machine])
    assert models.cpu_class() == expected
    assert models.cpu_has_bf16() is bf16
    assert models.use_bf16("cpu") is bf16


def test_kernels_capped_to_avx2_make_a_fast_cpu_take_the_slow_path(monkeypatch):
    _machine(monkeypatch, FLAGS["Zen 4"], capability="AVX2")  # ATEN_CPU_CAPABILITY=avx2
    assert models.cpu_class() == "AVX2" and not models.cpu_has_bf16()


def test_no_cpuinfo_is_the_other_class(monkeypatch):
    def missing(self, *args, **kwargs):
        raise FileNotFoundError(self)

    monkeypatch.setattr(models.Path, "read_text", missing)  # macOS, Windows
    assert models.cpu_flags() == set() and models.cpu_class() == "other"
    assert not models.cpu_has_bf16()
