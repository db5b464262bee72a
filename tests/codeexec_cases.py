"""Adversarial cases for ``helpers.codeexec`` and the settings that must judge them right.

Cases with the verdict each must get and a check on the host (no file written, no connection, no
process left): correct and wrong code, a crash, endless loops, a fork bomb, escapes by file,
network and signal, a leftover daemon, a clean run using threads and a subprocess; limits on
what a run may write (its work folder, /tmp, /dev/shm) and on the devices it may open; and
``FORGERIES``, wrong solutions that try to be judged "passed" (frames, the garbage collector,
tracebacks, the descriptors, an early exit, the assertion machinery, killing the judge). A case
that ``needs`` a protection the setting lacks is reported "not held", not judged.

Settings: as root and as an unprivileged user, with bubblewrap and without it (with and without
user namespaces), and while that user already runs 80 threads. Running it prints the table:

    .venv/bin/python tests/codeexec_cases.py           # every setting this machine allows
    .venv/bin/python tests/codeexec_cases.py --mode no-bwrap --busy-threads 80 --json

It needs only the standard library and ``helpers.codeexec``, so an unprivileged user can run it
from any Python of the same version (``reachable_python``), even where the project's virtual
environment lives under a private home folder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# mode -> (bubblewrap allowed, namespaces the fallback may make)
MODES = {
    "bwrap": (True, ("user", "net")),
    "no-bwrap": (False, ("user", "net")),
    # as on a stock Ubuntu 24.04: a user namespace without capabilities (no uid map, no network
    # namespace), which is also why bubblewrap cannot start there
    "no-bwrap-ubuntu": (False, ("user-unmapped",)),
    "no-bwrap-no-userns": (False, ()),  # as where user namespaces are disabled
}
BUSY_THREADS = 80
# (mode, threads the user already runs) for the unprivileged user
UNPRIVILEGED_SETTINGS = [
    ("bwrap", 0),
    ("no-bwrap", 0),
    ("bwrap", BUSY_THREADS),
    ("no-bwrap", BUSY_THREADS),
    ("no-bwrap-ubuntu", BUSY_THREADS),
    ("no-bwrap-no-userns", BUSY_THREADS),
]
ROOT_SETTINGS = [("bwrap", 0), ("no-bwrap", 0)]
UNPRIVILEGED_USER = "nobody"
MODE_VARIABLE = "CODEEXEC_TEST_MODE"  # test_codeexec.py runs in this mode when it is set


@contextlib.contextmanager
def mode(name: str):
    """Run ``helpers.codeexec`` as in ``name`` (see MODES) inside the block; probe afresh."""
    from helpers import codeexec

    bwrap, namespaces = MODES[name]
    saved = codeexec._find_bwrap, getattr(codeexec, "FALLBACK_NAMESPACES", ())
    saved += (list(codeexec._probed),)
    if not bwrap:
        codeexec._find_bwrap = lambda: None
    codeexec.FALLBACK_NAMESPACES = namespaces
    codeexec._probed.clear()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            codeexec.is_sandboxed()  # probe now, in this mode
        yield codeexec
    finally:
        codeexec._find_bwrap, codeexec.FALLBACK_NAMESPACES = saved[:2]
        codeexec._probed[:] = saved[2]


_entered: list = []  # modes entered for the rest of the process (kept: leaving restores)


def apply_mode_from_environment() -> str:
    """Enter the mode named by ``$CODEEXEC_TEST_MODE`` for the rest of the process."""
    name = os.environ.get(MODE_VARIABLE) or "bwrap"
    _entered.append(mode(name))
    _entered[-1].__enter__()
    return name


@contextlib.contextmanager
def busy_threads(count: int, user: str | None = None):
    """A separate process of ``user`` (default: this one's) holding ``count`` idle threads."""
    if not count:
        yield None
        return
    script = (
        "import sys, threading\n"
        "stop = threading.Event()\n"
        f"for _ in range({count}):\n"
        "    threading.Thread(target=stop.wait, daemon=True).start()\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [python_for(user), "-I", "-S", "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **as_user(user),
    )
    try:
        assert proc.stdout.readline().strip() == "ready", "the busy-threads process did not start"
        yield proc
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait()


def python_for(user: str | None) -> str:
    """An interpreter ``user`` can start (only the standard library is needed)."""
    return sys.executable if user is None else reachable_python(user, need=())[0]


def as_user(user: str | None) -> dict:
    """Popen keywords that run a child as ``user`` (no supplementary groups)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@dataclass
class Host:
    """What the cases reach for on the host: a folder anyone may write, a secret anyone may read,
    a TCP listener, a process to kill, and a marker for processes a case leaves behind."""

    folder: Path
    secret: Path
    listener: socket.socket
    victim: subprocess.Popen
    marker: str = field(default_factory=lambda: f"codeexec-case-{uuid.uuid4().hex}")

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]


@contextlib.contextmanager
def host():
    """Set up a ``Host``; the folder is world-writable so that only the sandbox can refuse."""
    folder = Path(tempfile.mkdtemp(prefix="codeexec-host-", dir="/tmp"))
    folder.chmod(0o1777)
    secret = folder / "secret.txt"
    secret.write_text("hunter2")
    secret.chmod(0o644)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    where = Host(folder, secret, listener, start_victim())
    try:
        yield where
    finally:
        where.victim.kill()
        where.victim.wait()
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)


def start_victim() -> subprocess.Popen:
    """A sleeping process of this user, outside any run, for a case to try to kill."""
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", "import time; time.sleep(600)"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@dataclass(frozen=True)
class Case:
    name: str
    code: str  # formatted with the Host's fields: {folder}, {secret}, {port}, {victim}, {marker}
    tests: str
    expect: tuple[str, ...]  # the statuses that are right
    timeout: float = 3.0
    needs: tuple[str, ...] = ()  # protections (codeexec.PROTECTIONS) without which it is not run


def sleeper(marker: str) -> str:
    """Python that replaces the current process by a 60 s sleep tagged with ``marker``.

    ``/bin/sleep`` with ``marker`` as its name: it starts in about a millisecond, where a Python
    interpreter takes tens, so a fork loop's children do not starve the loop on a slow CPU.
    """
    return f"os.execv('/bin/sleep', ['{marker}', '60'])"


ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"
BOMB = "import os\\nwhile True:\\n    try: os.fork()\\n    except OSError: pass\\n"
CASES = [
    Case("correct code", ADD, ADD_TESTS, ("passed",)),
    Case("wrong code", "def add(a, b):\n    return a - b\n", ADD_TESTS, ("failed",)),
    Case("crash before the tests", "import no_such_module_xyz\n" + ADD, ADD_TESTS, ("error",)),
    Case("endless busy loop", "while True:\n    pass\n" + ADD, ADD_TESTS, ("timeout",), 1.0),
    Case("endless sleep", "import time\ntime.sleep(600)\n" + ADD, ADD_TESTS, ("timeout",), 1.0),
    Case(
        "fork bomb",
        "import os, sys\n"
        "if os.fork() == 0:\n"
        f"    os.execv(sys.executable, [sys.executable, '-c', '{BOMB}', '{{marker}}'])\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        pass\n",
        ADD_TESTS,
        ("timeout", "error"),
        1.0,
    ),
    Case(
        "write outside the work folder",
        "open({folder!r} + '/escaped.txt', 'w').write('x')\n" + ADD,
        ADD_TESTS,
        ("error",),
    ),
    Case(
        "write to the root folder",
        "open('/codeexec-escaped-{marker}.txt', 'w').write('x')\n" + ADD,
        ADD_TESTS,
        ("error",),
    ),
    Case("read a file outside", "print(open({secret!r}).read())\n" + ADD, ADD_TESTS, ("error",)),
    Case(
        "TCP connect to the host",
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
        "    reached = True\n"
        "except OSError:\n"
        "    reached = False\n" + ADD,
        ADD_TESTS + "assert not reached\n",
        ("passed",),
    ),
    Case(
        "kill a process outside",
        "import os, signal\n"
        "try:\n"
        "    os.kill({victim}, signal.SIGKILL)\n"
        "    refused = False\n"
        "except OSError:\n"
        "    refused = True\n" + ADD,
        ADD_TESTS + "assert refused\n",
        ("passed",),
    ),
    Case(
        "leftover daemon",
        "import os, sys\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        {sleeper('{marker}')}\n"
        "    os._exit(0)\n"
        "if os.fork() == 0:\n"
        f"    {sleeper('{marker}')}\n" + ADD,
        ADD_TESTS,
        ("passed",),
    ),
    Case(
        "clean run: threads, a subprocess, a file",
        "import concurrent.futures, subprocess, sys\n"
        "with concurrent.futures.ThreadPoolExecutor(4) as pool:\n"
        "    squares = list(pool.map(lambda x: x * x, range(8)))\n"
        "said = subprocess.run([sys.executable, '-c', 'print(6 * 7)'], capture_output=True,\n"
        "                      text=True).stdout.strip()\n"
        "with open('notes.txt', 'w') as f:\n"
        "    f.write('kept')\n" + ADD,
        ADD_TESTS + "assert squares[3] == 9\nassert said == '42', said\n"
        "assert open('notes.txt').read() == 'kept'\n",
        ("passed",),
    ),
]

WRONG_ADD = "    return a - b\n"
FORGE = (  # appends a "passed" report to every list, releases every lock, lets others run
    "import time\n"
    "def forge(objects):\n"
    "    for o in objects:\n"
    "        try:\n"
    "            if type(o) is list:\n"
    "                o.append(b'passed ')\n"
    "            elif hasattr(o, 'release') and hasattr(o, 'locked'):\n"
    "                o.release()\n"
    "        except Exception:\n"
    "            pass\n"
    "    time.sleep(0.5)\n"
    "def forge_frames(frame):\n"
    "    found = []\n"
    "    while frame is not None:\n"
    "        found += frame.f_locals.values()\n"
    "        frame = frame.f_back\n"
    "    forge(found)\n"
)
NOT_PASSED = ("failed", "error")
FORGERIES = [
    Case(
        "forge: reach the runner's frames (sys._getframe)",
        FORGE + "import sys\ndef add(a, b):\n    forge_frames(sys._getframe())\n" + WRONG_ADD,
        ADD_TESTS,
        NOT_PASSED,
    ),
    Case(
        "forge: every object of the garbage collector",
        FORGE + "import gc\ndef add(a, b):\n    forge(gc.get_objects())\n" + WRONG_ADD,
        ADD_TESTS,
        NOT_PASSED,
    ),
    Case(
        "forge: frames from an exception's traceback",
        FORGE + "def add(a, b):\n"
        "    try:\n"
        "        raise RuntimeError\n"
        "    except RuntimeError as exc:\n"
        "        forge_frames(exc.__traceback__.tb_frame)\n" + WRONG_ADD,
        ADD_TESTS,
        NOT_PASSED,
    ),
    Case(
        "forge: write a verdict to every descriptor",
        "import os, struct\n"
        "REPLY = b'{{\"value\": 3}}'\n"
        "def add(a, b):\n"
        "    for fd in range(3, 1024):\n"
        "        for data in (b'passed\\n', struct.pack('!I', len(REPLY)) + REPLY):\n"
        "            try:\n"
        "                os.write(fd, data)\n"
        "            except OSError:\n"
        "                pass\n" + WRONG_ADD,
        ADD_TESTS,
        NOT_PASSED,
    ),
    Case(
        "forge: exit with 0 before the tests",
        "import os\nos._exit(0)\ndef add(a, b):\n" + WRONG_ADD,
        ADD_TESTS,
        ("error",),
    ),
    Case(
        "forge: patch the assertion machinery",
        "import builtins, sys\n"
        "class Quiet(Exception):\n"
        "    pass\n"
        "builtins.AssertionError = Quiet\n"
        "sys.excepthook = lambda *args: None\n"
        "class Anything:\n"
        "    def __eq__(self, other):\n"
        "        return True\n"
        "class AnyInt(int):\n"
        "    def __eq__(self, other):\n"
        "        return True\n"
        "    __hash__ = int.__hash__\n"
        "calls = []\n"
        "def add(a, b):\n"
        "    calls.append(1)\n"
        "    return Anything() if len(calls) == 1 else AnyInt(a - b)\n",
        ADD_TESTS,
        ("failed",),
    ),
    Case(
        "forge: kill the judge",
        "import os, signal\ndef add(a, b):\n    os.kill(os.getppid(), signal.SIGKILL)\n"
        + WRONG_ADD,
        ADD_TESTS,
        NOT_PASSED,
    ),
]
FILL = (  # writes up to 256 MB in 8 MB files (each below the file size limit) to a folder
    "def fill(folder):\n"
    "    written = 0\n"
    "    try:\n"
    "        for i in range(32):\n"
    "            with open(f'{{folder}}/codeexec-fill-{marker}-{{i}}', 'wb') as f:\n"
    "                for _ in range(8):\n"
    "                    f.write(bytes(1 << 20))\n"
    "                    written += 1 << 20\n"
    "    except OSError:\n"
    "        pass\n"
    "    return written\n"
)
CAPPED = "assert written <= 72 << 20, f'{written >> 20} MB written'\n"  # the 64 MB cap and slack
DEVICES = ("null", "zero", "urandom")  # the only devices a run may open
LIMITS = [
    Case(
        "fill /tmp past the cap",
        FILL + "written = fill('/tmp')\n" + ADD,
        ADD_TESTS + CAPPED,
        ("passed",),
    ),
    Case(
        "fill /dev/shm past the cap",
        FILL + "written = fill('/dev/shm')\n" + ADD,
        ADD_TESTS + CAPPED,
        ("passed",),
    ),
    Case(
        "fill the work folder past the cap",
        FILL + "written = fill('.')\n" + ADD,
        ADD_TESTS + CAPPED,
        ("passed", "error"),  # a tmpfs refuses the writes; a watching host stops the run
    ),
    Case(
        "open devices beyond null, zero and urandom",
        "import os\n"
        "opened = set()\n"
        "for name in ('null', 'zero', 'urandom', 'full', 'random', 'tty', 'ptmx', 'console',\n"
        "             'kmsg', 'mem', 'port', 'fuse', 'net/tun', 'loop-control', 'vda', 'sda'):\n"
        "    try:\n"
        "        os.close(os.open('/dev/' + name, os.O_RDONLY | os.O_NONBLOCK))\n"
        "        opened.add(name)\n"
        "    except OSError:\n"
        "        pass\n" + ADD,
        ADD_TESTS + f"assert opened == {set(DEVICES)!r}, opened\n",
        ("passed",),
    ),
]
CASES += LIMITS + FORGERIES


def marked_processes(marker: str) -> list[int]:
    """Pids of processes anywhere on the machine whose command line carries ``marker``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                    found.append(int(name))
    return found


def host_problems(case: Case, where: Host) -> list[str]:
    """What a case did to the host that it must not have."""
    problems = []
    if marked := marked_processes(where.marker):
        problems.append(f"{len(marked)} process(es) left running")
        for pid in marked:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    escaped = [where.folder / "escaped.txt", Path(f"/codeexec-escaped-{where.marker}.txt")]
    for folder in ("/tmp", "/dev/shm"):
        escaped += sorted(Path(folder).glob(f"codeexec-fill-{where.marker}-*"))
    for path in escaped:
        if path.exists():
            problems.append(f"{path} was written")
            path.unlink()
    with contextlib.suppress(BlockingIOError):
        where.listener.accept()[0].close()
        problems.append("the host's TCP listener was reached")
    if where.victim.poll() is not None:
        problems.append("a process outside the run was killed")
    return problems


def judge_cases(cases: list[Case] = CASES) -> list[dict]:
    """Run every case here, in the current mode; one row per case."""
    from helpers import codeexec

    rows, held = [], set(codeexec.protections())
    with host() as where:
        for case in cases:
            if not set(case.needs) <= held:
                missing = ", ".join(sorted(set(case.needs) - held))
                rows.append(not_held_row(case, missing, sorted(held)))
                continue
            fields = {"folder": str(where.folder), "secret": str(where.secret)}
            fields |= {"port": where.port, "victim": where.victim.pid, "marker": where.marker}
            start = time.monotonic()
            result = codeexec.run_tests(case.code.format(**fields), case.tests, case.timeout)
            seconds = time.monotonic() - start
            problems = host_problems(case, where)
            if seconds > case.timeout + 3:
                problems.append(f"took {seconds:.1f} s")
            if where.victim.poll() is not None:  # a fresh victim for the next case
                where.victim = start_victim()
            right = result.status in case.expect and not problems
            rows.append(
                {
                    "case": case.name,
                    "expect": "/".join(case.expect),
                    "status": result.status,
                    "detail": result.detail,
                    "right": right,
                    "problems": problems,
                    "protections": list(getattr(result, "protections", ())),
                    "stderr": result.stderr[-400:] if not right else "",
                }
            )
    return rows


def not_held_row(case: Case, missing: str, held: list[str]) -> dict:
    """The row of a case not run: the setting lacks a protection it needs."""
    row = {"case": case.name, "expect": "/".join(case.expect), "status": "not held"}
    row |= {"detail": f"not held here: {missing}", "right": None, "problems": []}
    return row | {"protections": held, "stderr": ""}


def wrong(rows: list[dict]) -> list[dict]:
    """The rows judged wrong (a case not run for want of a protection is not wrong)."""
    return [row for row in rows if row["right"] is False]


def run_setting(mode_name: str, threads: int) -> list[dict]:
    """The cases in one mode, in this process, while this user runs ``threads`` more threads."""
    with mode(mode_name), busy_threads(threads):
        return judge_cases()


# --- running the settings as another user -----------------------------------------------------


def reachable_python(user: str, need=("pytest", "psutil")) -> tuple[str, list[str]]:
    """``(interpreter, extra sys.path)`` with which ``user`` can run codeexec (and import ``need``).

    The project's interpreter first; where the user cannot start it (a virtual environment built
    from a Python under a private home folder), a system Python of the same version, given this
    environment's site-packages. Raises LookupError naming what was tried.
    """
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    site = [sysconfig.get_paths()[key] for key in ("purelib", "platlib")]
    site = list(dict.fromkeys(site))
    candidates = [sys.executable]
    candidates += [f"{folder}/python{version}" for folder in ("/usr/bin", "/usr/local/bin", "/bin")]
    probe = textwrap.dedent(
        f"""
        import os, subprocess, sys
        sys.path[1:1] = {site!r}
        for name in {list(need)!r}:
            __import__(name)
        real = os.path.realpath(sys.executable)
        subprocess.run([real, "-I", "-S", "-c", "import json, ctypes"], check=True)
        """
    )
    tried = []
    for candidate in dict.fromkeys(candidates):
        if not os.path.exists(candidate):
            continue
        try:
            done = subprocess.run(
                [candidate, "-I", "-c", probe],
                capture_output=True,
                text=True,
                cwd="/",
                **as_user(user),
            )
        except OSError as exc:  # e.g. not executable by the user
            tried.append(f"{candidate}: {exc.strerror}")
            continue
        if done.returncode == 0:
            return candidate, site
        tried.append(f"{candidate}: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    raise LookupError(f"no Python {version} that {user} can start: " + "; ".join(tried))


def readable_copy(folder: Path) -> Path:
    """A copy of what the runs need (the package, these tests, the sample data) anyone can read."""
    shutil.copytree(REPO / "src" / "helpers", folder / "src" / "helpers")
    (folder / "tests").mkdir()
    for name in ("codeexec_cases.py", "test_codeexec.py"):
        shutil.copyfile(REPO / "tests" / name, folder / "tests" / name)
    (folder / "data" / "samples").mkdir(parents=True)
    sample = REPO / "data" / "samples" / "code_generation.jsonl"
    shutil.copyfile(sample, folder / "data" / "samples" / sample.name)
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


@contextlib.contextmanager
def unprivileged(user: str = UNPRIVILEGED_USER, need=("pytest", "psutil")):
    """``(command prefix, env, copy)`` that run Python as ``user`` on a readable copy."""
    python, site = reachable_python(user, need)
    with tempfile.TemporaryDirectory(prefix="codeexec-unprivileged-", dir="/tmp") as tmp:
        os.chmod(tmp, 0o755)
        copy = readable_copy(Path(tmp) / "repo")
        home = Path(tmp) / "home"
        home.mkdir()
        os.chown(home, *(lambda e: (e.pw_uid, e.pw_gid))(pwd.getpwnam(user)))
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(home)}
        env |= {"PYTHONPATH": os.pathsep.join([str(copy / "src"), *site])}
        env |= {"PYTHONDONTWRITEBYTECODE": "1", "FINETUNE_COURSE_ROOT": str(copy)}
        yield [python], env, copy


def run_as(user, argv: list[str], env: dict, copy) -> subprocess.CompletedProcess:
    """Run ``argv`` as ``user`` (None: this user) in the readable copy; capture its output."""
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, cwd=str(copy), timeout=600, **as_user(user)
    )


def run_setting_as(user: str, mode_name: str, threads: int) -> list[dict]:
    """The cases in one mode as ``user`` (in a child process); the rows it printed."""
    with unprivileged(user, need=()) as (prefix, env, copy), busy_threads(threads, user):
        script = copy / "tests" / "codeexec_cases.py"
        argv = [*prefix, str(script), "--mode", mode_name, "--json"]
        done = run_as(user, argv, env, copy)
    try:  # exit code 1: some case was judged wrong, and the rows say which
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}") from None


def table(settings: list[tuple[str, str, int]]) -> str:
    """Judge every case in every ``(user, mode, threads)`` setting; a Markdown verdict table."""
    columns, results = [], []
    for user, mode_name, threads in settings:
        label = f"{user}, {mode_name}" + (f", +{threads} threads" if threads else "")
        try:
            if user == current_user():
                rows = run_setting(mode_name, threads)
            else:
                rows = run_setting_as(user, mode_name, threads)
        except (LookupError, RuntimeError) as exc:
            print(f"{label}: not run: {exc}", file=sys.stderr)
            continue
        columns.append(label)
        results.append(rows)
    lines = ["| case | expected | " + " | ".join(columns) + " |"]
    lines.append("|---" * (len(columns) + 2) + "|")
    for i, case in enumerate(CASES):
        cells = [
            {True: "✓ ", False: "✗ ", None: "– "}[rows[i]["right"]]
            + rows[i]["status"]
            + ("" if not rows[i]["problems"] else f" ({'; '.join(rows[i]['problems'])})")
            for rows in results
        ]
        lines.append(f"| {case.name} | {'/'.join(case.expect)} | " + " | ".join(cells) + " |")
    counts = [right_count(rows) for rows in results]
    lines.append("| **right** | | " + " | ".join(f"**{n}**" for n in counts) + " |")
    held = [", ".join(rows[0]["protections"]) for rows in results]
    lines.append("| protections | | " + " | ".join(held) + " |")
    return "\n".join(lines)


def right_count(rows: list[dict]) -> str:
    """ "right/judged", and how many were not run for want of a protection."""
    judged = [row for row in rows if row["right"] is not None]
    text = f"{sum(row['right'] for row in judged)}/{len(judged)}"
    return text + (f" ({len(rows) - len(judged)} not held)" if len(judged) < len(rows) else "")


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=sorted(MODES), help="one mode, as the current user")
    parser.add_argument("--busy-threads", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON line")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    if args.mode:
        rows = run_setting(args.mode, args.busy_threads)
        if args.json:
            print(json.dumps(rows))
        else:
            for row in rows:
                word = {True: "right", False: "WRONG", None: "not-held"}[row["right"]]
                print(word, row["case"], row["status"], row)
            print("right:", right_count(rows))
        return 1 if wrong(rows) else 0
    me = current_user()
    settings = [(me, mode_name, threads) for mode_name, threads in ROOT_SETTINGS]
    if os.geteuid() == 0:
        settings += [(UNPRIVILEGED_USER, m, t) for m, t in UNPRIVILEGED_SETTINGS]
    else:
        settings = [(me, m, t) for m, t in UNPRIVILEGED_SETTINGS]
    print(table(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
