"""The platform branches in helpers, run here with the platform faked: macOS on Apple silicon
(MPS, no /proc/cpuinfo, ru_maxrss in bytes, no malloc_trim), Linux on Arm, a Colab T4, torchrun.

The code sandbox's platform branches are helpers.codeexec's own tests'.
"""

import contextlib
import types

import pytest
import torch

from helpers import measure, models

ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp bf16 i8mm
CPU implementer\t: 0x41
"""
ZEN4_CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16
"""


@pytest.fixture
def gpu(monkeypatch):
    """Set which accelerators torch reports: ``gpu(cuda=..., mps=...)``."""

    def set_available(cuda=False, mps=False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return set_available


@pytest.fixture
def cpuinfo(monkeypatch):
    """Make /proc/cpuinfo read as ``text``, or be absent (None: macOS)."""

    def set_text(text):
        def read_text(path, *args, **kwargs):
            if str(path) != "/proc/cpuinfo":
                raise AssertionError(f"unexpected read of {path}")
            if text is None:
                raise FileNotFoundError(path)
            return text

        monkeypatch.setattr(models.Path, "read_text", read_text)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")

    return set_text


def test_a_mac_picks_mps_and_a_cuda_gpu_comes_first(gpu, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    gpu(mps=True)
    assert models.pick_device() == "mps"
    gpu(cuda=True, mps=True)
    assert models.pick_device() == "cuda"
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun's second process
    assert models.pick_device() == "cuda:1"
    gpu()
    assert models.pick_device() == "cpu"


def test_mps_trains_in_fp32_with_the_default_attention(gpu, cpuinfo):
    cpuinfo(ZEN4_CPUINFO)  # even where the CPU itself has bf16
    gpu(mps=True)
    assert models.use_bf16() is False
    assert models.frozen_weights_dtype("lora") is torch.float32
    assert isinstance(models.autocast(), contextlib.nullcontext)
    assert models.attention_implementation("mps") is None  # SDPA, as on a GPU
    assert models.use_bf16("mps", requested=True) is True  # asked for: honoured


@pytest.mark.parametrize(
    ("text", "kind"),
    [(None, "other"), (ARM_CPUINFO, "other"), (ZEN4_CPUINFO, "AVX-512 BF16")],
    ids=["macos-no-proc", "linux-aarch64", "zen4"],
)
def test_cpu_class_without_x86_flags_is_other_and_fp32(gpu, cpuinfo, text, kind):
    gpu()
    cpuinfo(text)
    assert models.cpu_class() == kind
    assert models.use_bf16("cpu") is (kind == "AVX-512 BF16")


def test_a_mac_describes_its_cpu_without_proc_cpuinfo(cpuinfo, monkeypatch):
    cpuinfo(None)
    monkeypatch.setattr(models.platform, "processor", lambda: "arm")
    monkeypatch.setattr(models.os, "cpu_count", lambda: 10)
    assert models.cpu_description() == "arm, 10 cores, other"


def test_a_colab_t4_does_not_get_emulated_bf16(gpu, monkeypatch):
    gpu(cuda=True)
    seen = {}

    def bf16_supported(including_emulation=True):
        seen["emulation"] = including_emulation
        return including_emulation  # a T4: bf16 only emulated

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", bf16_supported)
    assert models.use_bf16("cuda") is False
    assert seen == {"emulation": False}


@pytest.mark.parametrize("failure", [AttributeError, OSError], ids=["no-malloc_trim", "no-libc"])
def test_trimming_the_heap_is_a_no_op_without_glibc(monkeypatch, failure):
    def cdll(name):
        if failure is OSError:
            raise OSError(f"{name}: cannot open shared object file")
        return types.SimpleNamespace()  # macOS's libSystem: no malloc_trim

    monkeypatch.setattr(models.ctypes, "CDLL", cdll)
    models.trim_heap()


@pytest.mark.parametrize(("platform", "maxrss"), [("linux", 2048 * 1024), ("darwin", 2048 * 2**20)])
def test_peak_memory_reads_kib_on_linux_and_bytes_on_macos(monkeypatch, platform, maxrss):
    import resource
    import sys

    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(resource, "getrusage", lambda who: types.SimpleNamespace(ru_maxrss=maxrss))
    monkeypatch.setattr(measure, "_peak_before_resets_mb", 0.0)
    assert measure.process_peak_rss_mb() == 2048


def test_without_proc_memory_is_sampled_at_step_boundaries(monkeypatch):
    def no_proc(path, *args, **kwargs):
        raise FileNotFoundError(path)  # macOS: no /proc/self/status or clear_refs

    monkeypatch.setattr(measure.Path, "read_text", no_proc)
    monkeypatch.setattr(measure.Path, "write_text", no_proc)
    rss = iter([100, 300, 200, 150])
    info = lambda: types.SimpleNamespace(rss=next(rss) * 2**20)  # noqa: E731
    monkeypatch.setattr(measure.psutil, "Process", lambda: types.SimpleNamespace(memory_info=info))
    meter = measure.MemoryMeter("mps")
    meter.start()
    meter.sample()
    meter.sample()
    meter.stop()
    assert (meter.start_mb, meter.peak_mb) == (100, 300)


def test_a_batch_runs_peak_memory_reads_each_platforms_ru_maxrss_unit():
    """Linux's ru_maxrss is in KiB, macOS's in bytes: 3 GiB either way."""
    from helpers.batch.run import maxrss_mib

    assert maxrss_mib(3 * 2**20, platform="linux") == 3072
    assert maxrss_mib(3 * 2**30, platform="darwin") == 3072


def test_info_names_a_t4s_fp16_mixed_precision(gpu, monkeypatch, capsys):
    from helpers.cli import main

    gpu(cuda=True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "\nbf16          no " in out and "\nfp16          yes " in out
