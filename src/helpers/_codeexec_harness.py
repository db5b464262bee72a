"""The in-sandbox half of ``helpers.codeexec``: run a solution, then its tests, report a verdict.

``helpers.codeexec`` starts it as ``python -I -S -u harness.py IN_DIR MODE NONCE_FD VERDICT_FD
CPU_S MEMORY_MB NPROC FSIZE_MB UID SHARED_BASE NAMESPACES WORK_MB``, inside bubblewrap (MODE
``bwrap``) or, where bubblewrap cannot run, directly (MODE ``fallback``). It imports only the
standard library (no site-packages) and little of it, because it starts once per run, and
``confine.py`` and ``wire.py``, copied beside it (``helpers._codeexec_confine``: limits,
privileges, namespaces and Landlock; ``helpers._codeexec_wire``: the call channel).

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

How the verdict stays unforgeable: the code never runs in the process that judges.

- After confining itself, the harness forks. The child closes the nonce and verdict pipes and
  runs the solution; the parent, the *judge*, runs the tests and never runs untrusted code. The
  tests reach the solution's functions through ``wire.Remote`` proxies: calls travel on two
  pipes and only plain data comes back (see ``_codeexec_wire``), so frames, the garbage
  collector, patched builtins, ``__eq__`` tricks or writes to the pipes change at most what the
  solution's calls returned, never how the judge compares it or what it reports.
- The nonce stays unread in its pipe until the tests have run. Only then does the judge read it
  and write ``NONCE STATUS DETAIL``; the child cannot ptrace the judge (not dumpable).
- An exit (``sys.exit``, ``os._exit``, a signal) of the solution's process is an error before
  the tests and a failure during them; an exit of the judge leaves no verdict: never a pass.
- What no harness can tell apart: a solution that returns what the tests expect for their
  inputs (read from the tests, or hard-coded) passes, as it would anywhere.
"""

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
    import wire

    del sys.path[0]
    sys.dont_write_bytecode = _saved
else:
    from helpers import _codeexec_confine as confine
    from helpers import _codeexec_wire as wire

SOLUTION = "<solution>"
TESTS = "<tests>"
DETAIL_CHARS = 300
READABLE_LIST = "readable"  # IN_DIR file naming the folders the fallback may read, one a line
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
CLONE_NEWNET = 0x40000000
PER_NAMESPACE_NPROC = (5, 14)  # Linux counts RLIMIT_NPROC per user namespace from 5.14 on
SHARED_MARGIN = 64 + 8 * (os.cpu_count() or 1)  # room left for the user's other programs
CLEANUP_SECONDS = 5.0
EXIT_SECONDS = 1.0  # how long the judge waits for a solution's process whose pipes closed
RUNNER_NICE = 10  # in the fallback: a fork bomb cannot starve the supervisor that must stop it


def main(argv: list[str]) -> None:
    """Read the inputs, confine this process, fork the solution, judge it, write the verdict."""
    in_dir, mode = argv[0], argv[1]
    numbers = map(int, argv[2:10])
    nonce_fd, verdict_fd, cpu_s, memory_mb, nproc, fsize_mb, uid, shared_base = numbers
    namespaces, work_mb = argv[10].split(","), int(argv[11])
    with open(os.path.join(in_dir, "solution.py"), encoding="utf-8") as f:
        code = f.read()
    with open(os.path.join(in_dir, "tests.py"), encoding="utf-8") as f:
        tests = f.read()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    if mode == "fallback" and sys.platform == "linux":
        supervise(libc, (nonce_fd, verdict_fd), uid)  # returns in the runner only
        limits = (cpu_s, memory_mb, nproc, fsize_mb)
        held = confine_fallback(libc, in_dir, uid, limits, namespaces, work_mb)
    else:
        held = confine_plain(libc, uid, nproc, shared_base, cpu_s, memory_mb, fsize_mb)
    os.write(verdict_fd, ("held " + ",".join(held) + "\n").encode())
    request_r, request_w = os.pipe()
    reply_r, reply_w = os.pipe()
    child = os.fork()
    if child == 0:  # the solution's process: it never holds the nonce or the verdict pipe
        for fd in (nonce_fd, verdict_fd, request_w, reply_r):
            os.close(fd)
        run_solution(code, request_r, reply_w)
    for fd in (request_r, reply_w):
        os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = wire.Channel(request_w, reply_r, child)
    status, detail = judge(tests, channel, verdict_fd)
    line = f"{status} {detail}".replace("\n", " ").encode("utf-8", "replace")
    nonce = os.read(nonce_fd, 64)
    os.write(verdict_fd, nonce + b" " + line + b"\n")
    with contextlib.suppress(OSError):
        os.kill(child, signal.SIGKILL)
    os._exit(0)


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


def confine_fallback(libc, in_dir, uid, limits, namespaces, work_mb):
    """Without bubblewrap: a fresh uid as root, own namespaces and a tmpfs where allowed, limits,
    Landlock. ``limits`` is ``(cpu_s, memory_mb, nproc, fsize_mb)``."""
    cpu_s, memory_mb, nproc, fsize_mb = limits
    held = ["limits"]
    keep_read = bool(uid) and not confine.reachable_by_others(confine.python_folders())
    if uid:
        held += ["disk"] if confine.mount_work_tmpfs(libc, work_mb, uid) else []
        confine.drop_privileges(uid, keep_read)
    per_namespace = kernel_at_least(PER_NAMESPACE_NPROC)
    count = None if uid or per_namespace else count_user_tasks(os.getuid())
    wants_userns = not keep_read and bool({"user", "user-unmapped"} & set(namespaces))
    in_userns = wants_userns and confine.enter_user_namespace(libc, map_ids="user" in namespaces)
    if in_userns and "net" in namespaces and libc.unshare(CLONE_NEWNET) == 0:
        held.append("network")
    if in_userns and "user" in namespaces and confine.mount_work_tmpfs(libc, work_mb, os.getuid()):
        held.append("disk")  # only with a uid map: Ubuntu's unmapped namespaces cannot mount
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


def run_solution(code: str, request_fd: int, reply_fd: int) -> None:
    """The child: run the code, send its names to the judge, then answer its calls; exit."""
    namespace = {"__name__": "solution"}
    try:
        exec(compile(code, SOLUTION, "exec"), namespace)
        objects: list = []

        def keep(value: object) -> dict:
            objects.append(value)
            return {"ref": len(objects) - 1, "type": type(value).__name__}

        names = [[k, wire.encode(v, keep)] for k, v in namespace.items() if k[:2] != "__"]
        message = {"names": names}
    except BaseException as exc:
        hint = " (the code exited before the tests ran)" if isinstance(exc, SystemExit) else ""
        message = {"error": describe(exc, "") + hint}
    try:
        wire.send(reply_fd, message)
    except ValueError as exc:
        wire.send(reply_fd, {"error": f"ValueError: {exc}"})
    if "names" in message:
        wire.serve(request_fd, reply_fd, objects)
    os._exit(0)


def judge(tests: str, channel, verdict_fd: int) -> tuple[str, str]:
    """Receive the solution's names, run the tests on them; return ``(status, detail)``."""
    try:
        first = channel.receive()
        if isinstance(first, dict) and "error" in first:
            return "error", str(first["error"])[:DETAIL_CHARS]
        namespace = {"__name__": "tests"}
        for name, value in first["names"]:
            if not str(name).startswith("__"):  # never the tests' __builtins__
                namespace[str(name)] = wire.decode(value, channel.named)
    except wire.Gone:
        return ended(channel, "before the tests ran", "error")
    except (TypeError, KeyError, ValueError, RecursionError):
        return ended(channel, "before the tests ran", "error", broke=True)
    os.write(verdict_fd, b"tests\n")
    try:
        exec(compile(tests, TESTS, "exec"), namespace)
    except BaseException as exc:
        if channel.gone:
            return ended(channel, "during the tests", "failed")
        return "failed", describe(exc, tests)
    if channel.gone:  # the tests swallowed the error that said so
        return ended(channel, "during the tests", "failed")
    return "passed", ""


def ended(channel, when: str, status: str, broke: bool = False) -> tuple[str, str]:
    """``(status, detail)`` for a solution's process that ended (or broke the channel) early."""
    deadline = time.monotonic() + EXIT_SECONDS  # its pipes close a moment before it is reaped
    while not channel.ended() and time.monotonic() < deadline:
        time.sleep(0.005)
    if not channel.ended():  # still running: it wrote something that is not a message
        broke = True
        with contextlib.suppress(OSError):
            os.kill(channel.child, signal.SIGKILL)
        channel.exit_status = os.waitpid(channel.child, 0)[1]
    if broke:
        return status, f"the solution's process broke the test channel {when}"
    code = os.waitstatus_to_exitcode(channel.exit_status)
    if -code in (signal.SIGXCPU, signal.SIGKILL):
        return "timeout", "CPU time limit exceeded"
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    return status, f"the process {how} {when}"


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
