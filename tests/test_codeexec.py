"""helpers.codeexec: verdicts, limits, isolation, unforgeable results, parallel runs and pass@k.

``$CODEEXEC_TEST_MODE`` (see ``codeexec_cases.MODES``) runs the whole file without bubblewrap, or
without user namespaces either; ``test_codeexec_unprivileged.py`` runs it so as an unprivileged
user, with and without bubblewrap, while that user runs many threads.
"""

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
import warnings
from fractions import Fraction
from pathlib import Path

import codeexec_cases
import psutil
import pytest
from codeexec_cases import sleeper

from helpers import _codeexec_confine, _codeexec_harness, codeexec, paths

MODE = codeexec_cases.apply_mode_from_environment()
ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
HELD = codeexec.protections()


def needs(*names):
    """Skip unless every protection named holds here (a tuple: any of its names)."""
    missing = [n for n in names if not set((n,) if isinstance(n, str) else n) & set(HELD)]
    return pytest.mark.skipif(bool(missing), reason=f"not held here ({MODE}): {missing}")


contains_forks = needs(("processes", "processes-shared"), "cleanup")


def run(code, tests=("assert True",), timeout=3.0, **options):
    """run_tests, asserting it came back within timeout + 2 s and left no process behind."""
    before = set(psutil.Process().children(recursive=True))  # the test's own helpers
    start = time.monotonic()
    result = codeexec.run_tests(code, list(tests), timeout=timeout, **options)
    assert time.monotonic() - start <= timeout + 2
    assert result.duration <= timeout + 2
    assert set(psutil.Process().children(recursive=True)) <= before
    return result


def marked_processes(marker):
    """Processes anywhere on the machine whose command line carries ``marker``."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if marker in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def test_correct_solution_passes():
    result = run(ADD, ADD_TESTS)
    assert (result.status, result.passed, result.detail) == ("passed", True, "")


def test_wrong_solution_fails_on_the_first_failing_assert():
    result = run("def add(a, b):\n    return a - b\n", ["assert add(0, 0) == 0", *ADD_TESTS])
    assert (result.status, result.passed) == ("failed", False)
    assert result.detail == "AssertionError: assert add(1, 2) == 3"


def test_exception_in_the_tests_is_a_failure_naming_the_test():
    result = run("def other():\n    pass\n", ADD_TESTS)
    assert result.status == "failed"
    assert result.detail == "NameError: name 'add' is not defined [in: assert add(1, 2) == 3]"


def test_syntax_error_is_an_error():
    result = run("def add(a, b)\n    return a + b\n", ADD_TESTS)
    assert result.status == "error"
    assert result.detail == "SyntaxError: expected ':' (line 1)"


def test_crash_before_the_tests_is_an_error():
    result = run("import nonexistent_module_xyz\n" + ADD, ADD_TESTS)
    assert result.status == "error"
    assert result.detail == "ModuleNotFoundError: No module named 'nonexistent_module_xyz'"


def test_stdlib_modules_import_inside_the_sandbox():
    # Regression: bwrap copied /root's 0700 mode onto the folders above a pyenv Python, so the
    # fresh uid could import nothing beyond what the harness had loaded as root.
    code = "import collections, datetime, json, logging, re, subprocess\nlogging.getLogger('x')\n"
    result = run(code + ADD, ADD_TESTS)
    assert result.status == "passed", result.detail


def test_infinite_loop_times_out():
    result = run("while True:\n    pass\n", ADD_TESTS, timeout=1.0)
    assert result.status == "timeout" and not result.passed


def test_sleep_past_the_timeout_times_out():
    result = run("import time\ntime.sleep(30)\n" + ADD, ADD_TESTS, timeout=1.0)
    assert result.status == "timeout"


def test_memory_bomb_is_stopped_by_the_memory_limit():
    code = "def add(a, b):\n    return len(bytearray(10**10))\n"
    result = run(code, ADD_TESTS)
    assert (result.status, result.detail) == ("failed", "MemoryError [in: assert add(1, 2) == 3]")


def test_runaway_list_growth_is_stopped_by_the_memory_limit():
    result = run("data = [0]\nwhile True:\n    data = data + data\n", ADD_TESTS, memory_mb=96)
    assert (result.status, result.detail) == ("error", "MemoryError")


@contains_forks
def test_fork_loop_hits_the_process_limit_and_leaves_nothing():
    marker = f"codeexec-fork-{uuid.uuid4().hex}"
    code = f"import os, sys\nwhile True:\n    if os.fork() == 0:\n        {sleeper(marker)}\n"
    # Without user namespaces an unprivileged user's limit is the tasks it already runs + 112
    # on 2 cores (more on more), and the loop runs at nice 10: with the CPU busy, it took up to
    # 2.4 s to reach it when each child started Python, so it gets 10 s, not 3.
    result = run(code, ADD_TESTS, timeout=10.0)
    assert result.status == "error" and result.detail.startswith("BlockingIOError")
    assert marked_processes(marker) == []


@contains_forks
def test_children_of_a_run_that_times_out_are_killed_with_it():
    marker = f"codeexec-timeout-{uuid.uuid4().hex}"
    code = (
        f"import os, sys\nfor _ in range(5):\n    if os.fork() == 0:\n        {sleeper(marker)}\n"
    )
    result = run(code + "while True:\n    pass\n", ADD_TESTS, timeout=1.0)
    assert result.status == "timeout"
    assert marked_processes(marker) == []


@contains_forks
def test_pure_fork_bomb_is_contained_and_killed():
    code = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    result = run(code, ADD_TESTS, timeout=1.0)
    assert result.status == "timeout"


@contains_forks
def test_sleeping_children_and_a_setsid_daemon_do_not_survive_the_call():
    marker = f"codeexec-daemon-{uuid.uuid4().hex}"
    code = (
        "import os, sys\n"
        "for _ in range(3):\n"
        "    if os.fork() == 0:\n"
        f"        {sleeper(marker)}\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        {sleeper(marker)}\n"
        "    os._exit(0)\n" + ADD
    )
    result = run(code, ADD_TESTS)
    assert result.status == "passed", result.detail
    assert marked_processes(marker) == []


@pytest.fixture
def open_folder():
    """A folder under /tmp that every user may write and read: only the sandbox can refuse."""
    folder = tempfile.mkdtemp(prefix="codeexec-open-", dir="/tmp")
    os.chmod(folder, 0o1777)
    yield folder
    subprocess.run(["rm", "-rf", folder], check=False)


@needs("writes")
def test_writes_outside_the_working_folder_are_impossible(open_folder):
    # Regression: the old test wrote only where the sandbox's user could not write anyway.
    marker = uuid.uuid4().hex
    targets = [f"{open_folder}/escape-{marker}.txt", f"/codeexec-escape-{marker}.txt"]
    targets.append(str(paths.repo_root() / f"escape-{marker}.txt"))
    for target in targets:
        result = run(f"open({target!r}, 'w').write('x')\n" + ADD, ADD_TESTS)
        assert result.status == "error", (target, result)
        assert result.detail.startswith(("FileNotFound", "Permission", "OSError: [Errno 30]"))
    assert not any(os.path.exists(t) for t in targets)


@needs("reads")
def test_files_outside_the_system_and_python_folders_cannot_be_read(open_folder):
    secret = os.path.join(open_folder, "secret.txt")
    with open(secret, "w") as f:
        f.write("hunter2")
    os.chmod(secret, 0o644)
    result = run(f"print(open({secret!r}).read())\n" + ADD, ADD_TESTS)
    assert result.status == "error" and "hunter2" not in result.stdout
    assert result.detail.startswith(("FileNotFound", "Permission"))


@needs("signals")
def test_a_process_outside_the_run_cannot_be_signalled():
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        code = f"import os\nos.kill({victim.pid}, 9)\n" + ADD
        result = run(code, ADD_TESTS)
        assert result.status == "error" and result.detail.startswith(("Permission", "ProcessLook"))
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_the_working_folder_is_writable_and_removed_afterwards(monkeypatch):
    # A folder under the system's temporary folder, not pytest's tmp_path: as root the
    # fallback runs the code under a fresh uid, which cannot pass pytest's 0700 folders.
    parent = Path(tempfile.mkdtemp(prefix="codeexec-test-", dir=tempfile.gettempdir()))
    parent.chmod(0o711)  # others may pass, not list: as the system's /tmp lets them
    monkeypatch.setattr(tempfile, "tempdir", str(parent))
    try:
        code = "with open('notes.txt', 'w') as f:\n    f.write('kept')\n" + ADD
        tests = ["assert open('notes.txt').read() == 'kept'", *ADD_TESTS]
        assert run(code, tests).status == "passed"
        assert list(parent.iterdir()) == []
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.parametrize(
    "code",
    ["import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n", "raise SystemExit(0)\n"],
)
def test_an_early_successful_exit_is_not_a_pass(code):
    result = run(code + ADD, ADD_TESTS)
    assert result.status == "error" and not result.passed


def test_exiting_from_inside_the_tests_is_a_failure():
    result = run("import os\ndef add(a, b):\n    os._exit(0)\n", ADD_TESTS)
    assert (result.status, result.detail) == (
        "failed",
        "the process exited with code 0 during the tests",
    )


def test_printing_or_writing_a_fake_verdict_is_not_a_pass():
    code = (
        "import os\n"
        "print('passed')\n"
        "for fd in range(256):\n"
        "    try:\n"
        "        os.write(fd, b'passed\\n')\n"
        "    except OSError:\n"
        "        pass\n"
        "os._exit(0)\n"
    )
    result = run(code, ADD_TESTS)
    assert not result.passed and result.status == "error"
    assert "passed" in result.stdout


def test_the_code_holds_no_descriptor_beyond_stdio_and_its_call_pipes():
    # The nonce and verdict pipes stay with the judge; the solution holds only its two channel
    # pipes, and writing to them forges nothing (see the forgery cases in codeexec_cases.py).
    code = (
        "import os, stat\n"
        "def open_fds():\n"
        "    found = {}\n"
        "    for fd in range(1024):\n"
        "        try:\n"
        "            found[fd] = stat.S_ISFIFO(os.fstat(fd).st_mode)\n"
        "        except OSError:\n"
        "            pass\n"
        "    return found\n"
    )
    tests = ["fds = open_fds()", "assert sorted(fds)[:3] == [0, 1, 2] and len(fds) == 5, fds"]
    tests.append("assert all(fds[fd] for fd in sorted(fds)[3:]), fds")
    assert run(code, tests).status == "passed"


@pytest.mark.parametrize("case", codeexec_cases.FORGERIES, ids=lambda case: case.name)
def test_a_wrong_solution_cannot_forge_a_pass(case):
    # Regression: sys._getframe reached the harness's worker, appended "passed" to its report
    # and released its locks: a wrong add was judged passed. The tests now run in a process
    # that never runs the code.
    result = run(case.code.format(marker=uuid.uuid4().hex), [case.tests], case.timeout)
    assert result.status in case.expect, result


def test_the_tests_reach_the_solutions_objects_through_its_process():
    code = (
        "class Stack:\n"
        "    def __init__(self):\n"
        "        self.items = []\n"
        "    def push(self, x):\n"
        "        self.items.append(x)\n"
        "    def pop(self):\n"
        "        return self.items.pop()\n"
        "    def __len__(self):\n"
        "        return len(self.items)\n"
        "def evens(n):\n"
        "    yield from range(0, n, 2)\n"
        "def halve(x):\n"
        "    if x % 2:\n"
        "        raise ValueError(f'{x} is odd')\n"
        "    return x // 2, float('nan'), {1: {2, 3}}, b'ok'\n"
        "LIMIT = 10\n"
        "def count_if(items, keep):\n"
        "    return sum(1 for item in items if keep(item))\n"
        "def twice(f):\n"
        "    return lambda x: f(f(x))\n"
        "def sort_in_place(items, seen):\n"
        "    items.sort()\n"
        "    seen['sorted'] = len(items)\n"
    )
    tests = [
        "s = Stack()",
        "s.push(3)",
        "assert len(s) == 1 and s.pop() == 3 and len(s) == 0",
        "assert list(evens(5)) == [0, 2, 4] and LIMIT == 10",
        "h, nan, d, b = halve(8)",
        "assert (h, nan != nan, d, b) == (4, True, {1: {2, 3}}, b'ok')",
        "try:\n    halve(3)\n    raise AssertionError('no error')\nexcept ValueError as e:\n"
        "    assert str(e) == '3 is odd'",
        # the tests' own functions are called back (a test of the sample data passes a lambda)
        "assert count_if([1, 2, 3, 4], lambda n: n % 2 == 0) == 2",
        "assert twice(lambda x: LIMIT + len(s) + x)(8) == 28",
        # arguments the solution changes in place change in the tests too
        "items, seen = [3, 1, 2], {}",
        "assert sort_in_place(items, seen) is None and items == [1, 2, 3]",
        "assert seen == {'sorted': 3}",
    ]
    result = run(code, tests)
    assert result.status == "passed", result


def test_huge_output_is_captured_up_to_a_bound():
    result = run("print('x' * 10_000_000)\n" + ADD, ADD_TESTS, max_output=1000)
    assert result.status == "passed"
    assert result.stdout.startswith("x" * 1000)
    assert result.stdout.endswith("\n[... 9999001 more bytes]")


def test_the_callers_secrets_are_not_in_the_environment(monkeypatch):
    secret = f"hunter2-{uuid.uuid4().hex}"
    monkeypatch.setenv("CODEEXEC_FAKE_SECRET", secret)
    code = "import os\nprint(dict(os.environ))\n" + ADD
    tests = ["assert 'CODEEXEC_FAKE_SECRET' not in __import__('os').environ", *ADD_TESTS]
    result = run(code, tests)
    assert result.status == "passed" and secret not in result.stdout


@needs(("network", "tcp"))
def test_there_is_no_network():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        code = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
            "    reached = True\n"
            "except OSError:\n"
            "    reached = False\n"
        )
        assert run(code, ["assert reached is False"]).status == "passed"
        with pytest.raises(BlockingIOError):
            server.accept()


def test_run_many_returns_results_in_order():
    pairs = [(ADD, ADD_TESTS), ("def add(a, b):\n    return 0\n", ADD_TESTS), ("def (", ADD_TESTS)]
    results = codeexec.run_many(pairs, timeout=3.0, workers=2)
    assert [r.status for r in results] == ["passed", "failed", "error"]
    assert psutil.Process().children(recursive=True) == []


def test_run_many_names_the_bad_pair():
    with pytest.raises(ValueError, match=r"pairs\[1\]: tests do not compile: .* \(line 2\)"):
        codeexec.run_many([(ADD, ADD_TESTS), (ADD, ["assert True", "assert ("])])
    with pytest.raises(TypeError, match=r"pairs\[0\]: code must be a str, got bytes"):
        codeexec.run_many([(b"x", ADD_TESTS)])


def test_reference_solutions_of_the_sample_data_pass_and_a_broken_one_fails():
    rows = [json.loads(line) for line in paths.sample_path("code_generation").open()][:4]
    codes = [r["messages"][-1]["content"].split("```python\n")[1].split("```")[0] for r in rows]
    pairs = [(code, row["tests"]) for code, row in zip(codes, rows, strict=True)]
    pairs.append(("", rows[0]["tests"]))
    results = codeexec.run_many(pairs)
    assert [r.status for r in results] == ["passed"] * 4 + ["failed"]


@pytest.mark.parametrize(
    ("code", "tests", "error", "message"),
    [
        (ADD, "", ValueError, "tests are empty"),
        (ADD, "assert add(1,", ValueError, r"tests do not compile: .*\(line 1\)"),
        (ADD, 42, TypeError, "tests must be a str or a list of str, got int"),
        (None, "assert True", TypeError, "code must be a str, got NoneType"),
    ],
)
def test_bad_arguments_get_a_clear_error(code, tests, error, message):
    with pytest.raises(error, match=message):
        codeexec.run_tests(code, tests)


def test_a_non_positive_timeout_is_refused():
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds, got 0"):
        codeexec.run_tests(ADD, ADD_TESTS, timeout=0)


def test_without_a_sandbox_it_warns_once_and_still_judges(monkeypatch):
    monkeypatch.setattr(codeexec, "_probed", [])
    monkeypatch.setattr(codeexec, "_find_bwrap", lambda: None)
    with pytest.warns(RuntimeWarning, match="no bubblewrap sandbox") as caught:
        results = [run(ADD, ADD_TESTS), run("def add(a, b):\n    return 0\n", ADD_TESTS)]
    assert len(caught) == 1
    assert "held: limits" in str(caught[0].message) and "not held:" in str(caught[0].message)
    assert [(r.status, r.sandboxed) for r in results] == [("passed", False), ("failed", False)]


def landlock_abi():
    return _codeexec_confine.landlock_abi(_codeexec_confine.ctypes.CDLL(None, use_errno=True))


@pytest.mark.skipif(landlock_abi() < 1, reason="no Landlock in this kernel")
def test_without_bubblewrap_landlock_confines_the_code(open_folder):
    # Regression: the fallback ran code with resource limits only; a write anywhere succeeded.
    with codeexec_cases.mode("no-bwrap"):
        target = f"{open_folder}/escape.txt"
        result = run(f"open({target!r}, 'w').write('x')\n" + ADD, ADD_TESTS)
        assert result.status == "error" and result.detail.startswith("PermissionError")
        assert not os.path.exists(target)
        expected = {"landlock", "writes", "reads", "cleanup"}
        expected |= {"tcp"} if landlock_abi() >= 4 else set()
        expected |= {"signals"} if landlock_abi() >= 6 else set()
        assert expected <= set(result.protections) and not result.sandboxed
        assert {"processes", "processes-shared"} & set(result.protections)


def test_a_correct_solution_passes_while_the_user_runs_many_threads():
    # Regression: without bubblewrap, RLIMIT_NPROC=32 counted every thread of the user, so with
    # 80 threads elsewhere the harness could not start its worker thread: "error" for everything.
    with codeexec_cases.busy_threads(codeexec_cases.BUSY_THREADS):
        results = [run(ADD, ADD_TESTS), run("import threading\n" + ADD, ADD_TESTS)]
        code = "import subprocess\nsubprocess.run(['true'], check=True)\n" + ADD
        results.append(run(code, ADD_TESTS))
    assert [r.status for r in results] == ["passed"] * 3, results


def test_the_mode_asked_for_is_the_mode_tested():
    bwrap, namespaces = codeexec_cases.MODES[MODE]
    assert namespaces == codeexec.FALLBACK_NAMESPACES
    if not bwrap:
        assert not codeexec.is_sandboxed() and not run(ADD, ADD_TESTS).sandboxed


@pytest.mark.skipif(os.geteuid() == 0 or not codeexec.is_sandboxed(), reason="bwrap, not root")
def test_before_linux_5_14_bubblewraps_process_limit_is_set_relative(monkeypatch):
    # There RLIMIT_NPROC counted the user's threads even inside bubblewrap's user namespace.
    monkeypatch.setattr(_codeexec_harness, "kernel_at_least", lambda version: False)
    with codeexec_cases.busy_threads(codeexec_cases.BUSY_THREADS):
        result = run("import threading\n" + ADD, ADD_TESTS)
    assert result.status == "passed" and "processes-shared" in result.protections


def test_results_name_the_protections_that_held():
    result = run(ADD, ADD_TESTS)
    assert result.protections == HELD and set(HELD) <= set(codeexec.PROTECTIONS)
    assert "limits" in HELD and ("bubblewrap" in HELD) == result.sandboxed
    if result.sandboxed:
        assert {"writes", "reads", "network", "signals", "cleanup", "processes"} <= set(HELD)


def test_a_run_started_as_root_counts_its_processes_alone_in_every_mode():
    if os.geteuid() != 0:
        pytest.skip("runs as root only: a fresh uid per run")
    for name in codeexec_cases.MODES:
        with warnings.catch_warnings(), codeexec_cases.mode(name):
            warnings.simplefilter("ignore", RuntimeWarning)
            assert "processes" in run(ADD, ADD_TESTS).protections, name


def test_as_root_without_bubblewrap_a_private_tmpdir_still_works(monkeypatch):
    # Regression: with $TMPDIR under a 0700 folder, the fallback's fresh uid could not reach
    # the run's folder, so every run was an error (as root, the CI's user).
    if os.geteuid() != 0:
        pytest.skip("runs as root only: a fresh uid per run")
    private = Path(tempfile.mkdtemp(prefix="codeexec-private-"))
    (private / "tmp").mkdir()
    assert private.stat().st_mode & 0o777 == 0o700
    monkeypatch.setattr(tempfile, "tempdir", str(private / "tmp"))
    try:
        with warnings.catch_warnings(), codeexec_cases.mode("no-bwrap"):
            warnings.simplefilter("ignore", RuntimeWarning)
            code = "import tempfile\nfd, path = tempfile.mkstemp()\n" + ADD
            result = run(code, ["assert open('notes.txt', 'w').write('kept') == 4", *ADD_TESTS])
        assert result.status == "passed", result
        assert list((private / "tmp").iterdir()) == []
    finally:
        shutil.rmtree(private, ignore_errors=True)


@pytest.mark.skipif("bubblewrap" not in HELD, reason=f"bubblewrap's mounts: none in {MODE}")
def test_in_bubblewrap_dev_holds_three_devices_and_tmp_is_the_capped_work_folder():
    # Regression: bwrap's --dev gave full, tty, ptmx, random... and an uncapped /dev/shm.
    code = "import os\nlisted = sorted(os.listdir('/dev'))\n"
    code += "where = {os.path.realpath(p) for p in ('/tmp', '/dev/shm', '.')}\n"
    tests = ["assert listed == ['null', 'shm', 'urandom', 'zero'], listed"]
    tests.append("assert where == {'/box/work'}, where")
    tests.append("assert os.statvfs('/box/work').f_blocks * os.statvfs('/box/work').f_frsize")
    tests[-1] += f" == {process_work_bytes()}"
    assert run(code, ["import os", *tests]).status == "passed"


def process_work_bytes():
    from helpers import _codeexec_process

    return _codeexec_process.WORK_MB << 20


@pytest.fixture
def fake_systemd_run(tmp_path, monkeypatch):
    """A ``systemd-run`` on PATH that records its arguments and runs the command after ``--``.

    This container has no systemd; the fake checks the command codeexec builds, not systemd.
    """
    record = tmp_path / "argv.json"
    script = tmp_path / "bin" / "systemd-run"
    script.parent.mkdir()
    script.write_text(
        f"#!{sys.executable} -I\n"
        "import json, os, sys\n"
        f"with open({str(record)!r}, 'a') as f:\n"
        "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "command = sys.argv[sys.argv.index('--') + 1:]\n"
        "os.execvp(command[0], command)\n"
    )
    script.chmod(0o755)
    tmp_path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")
    monkeypatch.setattr(codeexec, "_scoped", [])
    return record


@pytest.mark.skipif(sys.platform != "linux", reason="systemd-run is Linux only")
def test_where_systemd_run_works_each_run_gets_a_capped_cgroup(fake_systemd_run):
    result = run(ADD, ADD_TESTS)
    assert result.status == "passed" and "memory-total" in result.protections
    calls = [json.loads(line) for line in fake_systemd_run.read_text().splitlines()]
    assert len(calls) == 2  # the probe, then the run
    options = calls[-1][: calls[-1].index("--")]
    assert "--scope" in options and ("--user" in options) == (os.geteuid() != 0)
    assert f"MemoryMax={codeexec.MEMORY_TOTAL_MB}M" in options
    assert f"TasksMax={codeexec.TASKS_TOTAL}" in options and "MemorySwapMax=0" in options


def test_without_systemd_run_it_says_why_and_bounds_memory_by_the_process_limits(monkeypatch):
    monkeypatch.setattr(codeexec, "_scoped", [])
    monkeypatch.setenv("PATH", "/nonexistent")
    assert codeexec.cgroup_scope() == ([], "systemd-run is not installed")
    result = run(ADD, ADD_TESTS)
    assert result.status == "passed" and "memory-total" not in result.protections


@pytest.mark.skipif(
    "memory-total" not in HELD, reason=f"no cgroup per run here: {codeexec.cgroup_scope()[1]}"
)
def test_the_cgroup_caps_the_memory_of_all_the_processes_of_a_run():
    # Four processes of 400 MB each: every one within its address space, together past the cap.
    hold = "block = bytearray(400 << 20)\nfor i in range(0, len(block), 4096):\n    block[i] = 1\n"
    code = (
        "import os, time\n"
        "for _ in range(3):\n"
        "    if os.fork() == 0:\n" + textwrap.indent(hold, "        ") + "        time.sleep(5)\n"
        "        os._exit(0)\n" + hold + "for _ in range(3):\n    os.wait()\n" + ADD
    )
    result = run(code, ADD_TESTS, timeout=10.0)
    assert result.status != "passed", result


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (10, 3, 1, 0.3),  # pass@1 is the fraction correct
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (4, 1, 3, 0.75),  # 1 - C(3,3)/C(4,3) = 1 - 1/4
        (10, 0, 5, 0.0),
        (10, 10, 1, 1.0),
        (10, 8, 3, 1.0),  # fewer than k wrong samples: every k-subset has a correct one
    ],
)
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert codeexec.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_stable_where_the_binomials_are_huge():
    n, c, k = 2000, 37, 100
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert codeexec.pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-9)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_refuses_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="0 <= c <= n and 1 <= k <= n"):
        codeexec.pass_at_k(n, c, k)
