"""The in-sandbox half of ``helpers.codeexec``: run a solution, then its tests, report a verdict.

``helpers.codeexec`` starts it as
``python -I -S -u harness.py IN_DIR NONCE_FD VERDICT_FD CPU_S MEMORY_MB NPROC FSIZE_MB UID``.
It imports little because it starts once per run. How the verdict stays unforgeable:

- The code and the tests run in a worker thread that first unshares its file-descriptor table
  and closes the nonce and verdict pipes there; the code (and any thread or process it starts)
  never holds them. The main thread keeps both and runs no untrusted code.
- The nonce stays unread in its pipe until the worker has finished, so it is nowhere in memory
  while the code runs. Only then does the main thread read it and write ``NONCE STATUS DETAIL``.
- An exit (``sys.exit``, ``os._exit``, a signal) before that leaves no verdict: never a pass.
- An audit hook blocks the ways to reach the main thread from the worker (other threads'
  frames, the garbage collector's object lists, ctypes, interpreter-wide trace hooks).
  Code that deliberately tampers with the test runner in its own thread is out of scope: that is
  the trust boundary of any assert-based harness.
"""

import _thread
import contextlib
import ctypes
import os
import resource
import signal
import sys

SOLUTION = "<solution>"
TESTS = "<tests>"
TESTS_STARTED = "tests started"  # the worker's first report entry once the code has run
DETAIL_CHARS = 300
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, CLONE_FILES = 4, 38, 0x400
BLOCKED_EVENTS = frozenset(
    {
        "sys._current_frames",
        "sys._current_exceptions",
        "sys._setprofileallthreads",
        "sys._settraceallthreads",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
    }
)
BLOCKED_PREFIXES = ("ctypes.", "sys.monitoring")


def main(argv: list[str]) -> None:
    """Read the inputs, apply the limits, run the worker and write the verdict."""
    in_dir = argv[0]
    nonce_fd, verdict_fd, cpu_s, memory_mb, nproc, fsize_mb, uid = map(int, argv[1:])
    with open(os.path.join(in_dir, "solution.py"), encoding="utf-8") as f:
        code = f.read()
    with open(os.path.join(in_dir, "tests.py"), encoding="utf-8") as f:
        tests = f.read()
    limit_resources(cpu_s, memory_mb, nproc, fsize_mb)
    drop_privileges(uid)
    libc = ctypes.CDLL(None, use_errno=True)
    harden(libc)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # _thread.interrupt_main() must not reach us
    report: list = []
    tests_started, marked, finished = (_thread.allocate_lock() for _ in range(3))
    for lock in (tests_started, marked, finished):
        lock.acquire()
    args = (code, tests, report, (tests_started, marked), finished, libc, (nonce_fd, verdict_fd))
    # After the worker starts, this thread only uses local names bound here (the code may patch
    # modules and builtins), waits on locks and handles exact bytes: it allocates no object the
    # garbage collector tracks, so none of the code's finalisers can ever run on this thread.
    read, write, exit_ = os.read, os.write, os._exit
    type_, bytes_, started = type, bytes, TESTS_STARTED
    _thread.start_new_thread(worker, args)
    tests_started.acquire()
    if report and report[0] is started:
        write(verdict_fd, b"tests\n")
    marked.release()
    finished.acquire()
    line = report[-1] if report else None
    if type_(line) is not bytes_:
        line = b"error the test runner did not finish"
    nonce = read(nonce_fd, 64)
    write(verdict_fd, nonce + b" " + line + b"\n")
    exit_(0)


def limit_resources(cpu_s: int, memory_mb: int, nproc: int, fsize_mb: int) -> None:
    """Cap CPU time, address space, processes, file size and core dumps (where supported)."""
    limits = [
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
        (resource.RLIMIT_AS, memory_mb << 20, memory_mb << 20),
        (resource.RLIMIT_NPROC, nproc, nproc),
        (resource.RLIMIT_FSIZE, fsize_mb << 20, fsize_mb << 20),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    for which, soft, hard in limits:
        with contextlib.suppress(ValueError, OSError):  # not every platform has each (macOS: AS)
            resource.setrlimit(which, (soft, hard))


def drop_privileges(uid: int) -> None:
    """As root, become a fresh unprivileged user so RLIMIT_NPROC applies (root is exempt)."""
    if uid:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)


def harden(libc: ctypes.CDLL) -> None:
    """Forbid gaining privileges (setuid binaries) and ptrace/proc access to this process."""
    if sys.platform == "linux":
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def worker(code, tests, report, stage_locks, finished, libc, private_fds) -> None:
    """Hide the verdict pipes from this thread, then run the code and the tests."""
    try:
        if hasattr(libc, "unshare") and libc.unshare(CLONE_FILES) == 0:
            for fd in private_fds:
                os.close(fd)
        sys.addaudithook(make_guard())
        status, detail = run(code, tests, report, stage_locks)
        report.append(f"{status} {detail}".replace("\n", " ").encode("utf-8", "replace"))
    except BaseException as exc:  # the runner itself failed, e.g. out of memory
        report.append(f"error test runner: {type(exc).__name__}".encode())
    finally:
        if stage_locks[0].locked():
            stage_locks[0].release()
        finished.release()


def make_guard():
    """An audit hook refusing the events that could reach the main thread or raw memory.

    Everything it uses is bound in its closure, and nothing else refers to it, so the code cannot
    loosen it by patching this module or builtins.
    """
    blocked, prefixes, error = BLOCKED_EVENTS, BLOCKED_PREFIXES, RuntimeError

    def guard(event: str, args: tuple) -> None:
        if event in blocked or event.startswith(prefixes):
            raise error(f"codeexec sandbox: {event} is not allowed")

    return guard


def run(code: str, tests: str, report: list, stage_locks: tuple) -> tuple[str, str]:
    """Execute the code then the tests in one namespace; return ``(status, detail)``.

    Before the tests it lets the main thread record that they started, and waits until it has.
    """
    execute, compiled_tests = exec, compile(tests, TESTS, "exec")  # bound before the code runs
    namespace = {"__name__": "solution"}
    try:
        execute(compile(code, SOLUTION, "exec"), namespace)
    except BaseException as exc:
        hint = " (the code exited before the tests ran)" if isinstance(exc, SystemExit) else ""
        return "error", describe(exc, "") + hint
    report.append(TESTS_STARTED)
    tests_started, marked = stage_locks
    tests_started.release()
    marked.acquire()
    try:
        execute(compiled_tests, namespace)
    except BaseException as exc:
        return "failed", describe(exc, tests)
    return "passed", ""


def describe(exc: BaseException, tests: str) -> str:
    """One line for a results table: the exception, its message and the failing test line."""
    name = type(exc).__name__
    try:
        message = (str(exc).strip().splitlines() or [""])[0]
    except BaseException:
        message = "<unprintable message>"
    if isinstance(exc, SyntaxError):
        message = f"{exc.msg} (line {exc.lineno})"
    test_line = failing_test_line(exc, tests)
    if isinstance(exc, AssertionError) and test_line:
        text = f"{name}: {test_line}" + (f" ({message})" if message else "")
    else:
        text = f"{name}: {message}" if message else name
        text += f" [in: {test_line}]" if test_line else ""
    return text[:DETAIL_CHARS]


def failing_test_line(exc: BaseException, tests: str) -> str:
    """The source line of the innermost tests frame in the traceback, or ``""``."""
    lineno, tb = 0, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == TESTS:
            lineno = tb.tb_lineno
        tb = tb.tb_next
    lines = tests.splitlines()
    return lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""


if __name__ == "__main__":
    main(sys.argv[1:])
