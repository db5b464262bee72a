"""The in-sandbox half of ``helpers.codeexec``: run a solution, then its tests, report a verdict.

``helpers.codeexec`` starts it as ``python -I -S -u harness.py IN_DIR MODE NONCE_FD VERDICT_FD
CPU_S MEMORY_MB NPROC FSIZE_MB UID SHARED_BASE NAMESPACES``, inside bubblewrap (MODE ``bwrap``) or,
where bubblewrap cannot run, directly (MODE ``fallback``). It imports only the standard library
(no site-packages) and little of it, because it starts once per run, and ``confine.py``, copied
beside it (``helpers._codeexec_confine``: limits, privileges, namespaces and Landlock).

Confinement. Every limit below must hold for this run alone, not for the user as a whole:

- ``RLIMIT_NPROC`` counts every process and thread of a user (a kernel uid) in a user namespace,
  system-wide. So it is set only where that count is this run's own: a fresh uid (runs started by
  root), or a user namespace of its own (bubblewrap's, or one made here) on Linux 5.14+, where the
  count is kept per namespace. Elsewhere (user namespaces disabled) it is set relative to what the
  user already runs (``processes-shared``): a fork bomb stays bounded, but the bound is shared.
- In the fallback the harness first forks: the parent stays outside every restriction as the
  run's *supervisor*, a child subreaper (``PR_SET_CHILD_SUBREAPER``). Orphans, double-forked
  ``setsid`` daemons included, are re-parented to it, so when the runner ends (or codeexec sends
  SIGTERM at the timeout) it freezes, then kills, every process left, walking ``/proc``, until
  it has no child. The runner runs at a lower priority, so a fork bomb cannot starve it.
- Landlock (no privileges needed, Linux 5.13+) confines the runner in the fallback: writes only
  beneath the work folder, reads and execution only in the system and Python folders (the view
  bubblewrap gives), no TCP bind or connect (ABI 4+), no signal to a process outside the run and
  no abstract Unix socket outside it (ABI 6+). The harness reports the protections that held on
  its verdict pipe (``held NAME,...``), so the result says what confined this run.

How the verdict stays unforgeable:

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
import signal
import sys
import time

if __name__ == "__main__":  # the sandbox's copy: confine.py lies beside it, and -I left its
    # folder off sys.path. No bytecode is written there: the inputs stay as codeexec laid them.
    _saved = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import confine

    del sys.path[0]
    sys.dont_write_bytecode = _saved
else:
    from helpers import _codeexec_confine as confine

SOLUTION = "<solution>"
TESTS = "<tests>"
TESTS_STARTED = "tests started"  # the worker's first report entry once the code has run
DETAIL_CHARS = 300
READABLE_LIST = "readable"  # IN_DIR file naming the folders the fallback may read, one a line
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
CLONE_FILES, CLONE_NEWNET = 0x400, 0x40000000
PER_NAMESPACE_NPROC = (5, 14)  # Linux counts RLIMIT_NPROC per user namespace from 5.14 on
SHARED_MARGIN = 64 + 8 * (os.cpu_count() or 1)  # room left for the user's other programs
CLEANUP_SECONDS = 5.0
RUNNER_NICE = 10  # in the fallback: a fork bomb cannot starve the supervisor that must stop it
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
    """Read the inputs, confine this process, run the worker and write the verdict."""
    in_dir, mode = argv[0], argv[1]
    numbers = map(int, argv[2:10])
    nonce_fd, verdict_fd, cpu_s, memory_mb, nproc, fsize_mb, uid, shared_base = numbers
    namespaces = argv[10].split(",")
    with open(os.path.join(in_dir, "solution.py"), encoding="utf-8") as f:
        code = f.read()
    with open(os.path.join(in_dir, "tests.py"), encoding="utf-8") as f:
        tests = f.read()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    if mode == "fallback" and sys.platform == "linux":
        supervise(libc, (nonce_fd, verdict_fd), uid)  # returns in the runner only
        held = confine_fallback(libc, in_dir, uid, nproc, cpu_s, memory_mb, fsize_mb, namespaces)
    else:
        held = confine_plain(libc, uid, nproc, shared_base, cpu_s, memory_mb, fsize_mb)
    os.write(verdict_fd, ("held " + ",".join(held) + "\n").encode())
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


def confine_plain(libc, uid, nproc, shared_base, cpu_s, memory_mb, fsize_mb) -> list[str]:
    """Inside bubblewrap (or off Linux): limits, and a fresh uid for runs started by root.

    In bubblewrap's user namespace RLIMIT_NPROC counts this run alone from Linux 5.14 on; on an
    older kernel codeexec passes the user's current count (``shared_base`` >= 0) to set it
    relative. Off Linux (macOS counts processes, not threads, per user) the plain limit stays.
    """
    if shared_base >= 0:
        nproc, held = shared_base + nproc + SHARED_MARGIN, ["processes-shared"]
    else:
        held = ["processes"] if uid or sys.platform == "linux" else []
    confine.limit_resources(cpu_s, memory_mb, nproc, fsize_mb)
    confine.drop_privileges(uid)
    confine.harden(libc)
    return ["limits", *held]


def confine_fallback(libc, in_dir, uid, nproc, cpu_s, memory_mb, fsize_mb, namespaces):
    """Without bubblewrap: a fresh uid as root, own namespaces where allowed, limits, Landlock."""
    held = ["limits"]
    keep_read = bool(uid) and not confine.reachable_by_others(confine.python_folders())
    if uid:
        confine.drop_privileges(uid, keep_read)
    per_namespace = kernel_at_least(PER_NAMESPACE_NPROC)
    count = None if uid or per_namespace else count_user_tasks(os.getuid())
    wants_userns = not keep_read and bool({"user", "user-unmapped"} & set(namespaces))
    in_userns = wants_userns and confine.enter_user_namespace(libc, map_ids="user" in namespaces)
    if in_userns and "net" in namespaces and libc.unshare(CLONE_NEWNET) == 0:
        held.append("network")
    if uid or (in_userns and per_namespace):
        held.append("processes")
    else:  # the count the kernel checks is the user's: leave room for what it already runs
        count = count_user_tasks(os.getuid()) if count is None else count
        if count is not None:
            nproc = count + nproc + SHARED_MARGIN
            held.append("processes-shared")
    confine.limit_resources(cpu_s, memory_mb, nproc, fsize_mb)
    confine.harden(libc)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.nice(RUNNER_NICE)
    with open(os.path.join(in_dir, READABLE_LIST), encoding="utf-8") as f:
        readable = f.read().splitlines()
    landlocked = confine.landlock(libc, readable, [in_dir], os.getcwd())
    held += landlocked
    if in_userns:  # the namespace's capabilities are no longer needed
        confine.set_capabilities(libc, 0)
    if uid or "signals" in landlocked:  # the code can neither kill nor outlive the supervisor
        held.append("cleanup")
    return held


def kernel_at_least(version: tuple[int, int]) -> bool:
    """Whether the running Linux kernel is at least ``version`` (major, minor)."""
    numbers = []
    for part in os.uname().release.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        numbers.append(int(digits or 0))
    return tuple(numbers) >= version


def count_user_tasks(uid: int) -> int | None:
    """Processes and threads whose real uid is ``uid``, as ``/proc`` shows them (None: no /proc)."""
    total, found = 0, False
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            found = True
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{name}/status", "rb") as f:
                    fields = dict(line.split(b":", 1) for line in f.read().splitlines())
                if int(fields[b"Uid"].split()[0]) == uid:
                    total += int(fields[b"Threads"])
    return total if found else None


def supervise(libc: ctypes.CDLL, private_fds: tuple, uid: int) -> None:
    """Fork: the child returns and runs the code; this process waits, then kills what is left.

    As a child subreaper it inherits every orphan of the run, so ``end_every_process`` reaches
    processes that left the process group or the session. SIGTERM (codeexec's timeout, or this
    process's parent dying) ends the run early.
    """
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    watched = {signal.SIGCHLD, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    runner = os.fork()
    if runner == 0:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, watched)
        return
    for fd in private_fds:
        os.close(fd)
    status = 128 + signal.SIGTERM
    while True:
        ended, code = reap(runner)
        if ended:
            status = code
            break
        info = signal.sigtimedwait(watched, 1.0)
        if info is not None and info.si_signo == signal.SIGTERM:
            break
    end_every_process(uid)
    os._exit(status)


def reap(runner: int) -> tuple[bool, int]:
    """Collect every ended child; ``(True, exit code)`` once ``runner`` is among them."""
    result = (False, 0)
    with contextlib.suppress(ChildProcessError):
        while (found := os.waitpid(-1, os.WNOHANG))[0]:
            if found[0] == runner:
                code = os.waitstatus_to_exitcode(found[1])
                result = (True, code if code >= 0 else 128 - code)
    return result


def end_every_process(uid: int) -> None:
    """Kill every descendant (as root, first every process of the run's uid) and reap them all.

    Killing a fork bomb one generation at a time is a race its survivors can win, so the tree is
    frozen first: SIGSTOP to every descendant until a pass finds none left running (a pending
    signal makes ``fork`` fail, so a process sent SIGSTOP starts no other), then SIGKILL.
    """
    if uid:
        sweeper = os.fork()
        if sweeper == 0:
            with contextlib.suppress(OSError):
                os.setresuid(uid, uid, uid)
                os.kill(-1, signal.SIGKILL)  # every process of the fresh uid, but this one
            os._exit(0)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(sweeper, 0)
    deadline = time.monotonic() + CLEANUP_SECONDS
    me, stopped = os.getpid(), set()
    while time.monotonic() < deadline:
        running = [pid for pid in descendants(me) if pid not in stopped]
        if not running:
            break
        for pid in running:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGSTOP)
            stopped.add(pid)
    while time.monotonic() < deadline:
        for pid in descendants(me):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return  # no child left, so no descendant: orphans would have come to us
        signal.sigtimedwait({signal.SIGCHLD}, 0.01)


def descendants(root: int) -> list[int]:
    """Every process below ``root``, from the parent pids ``/proc`` shows."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    with open(f"/proc/{name}/stat", "rb") as f:
                        ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


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
