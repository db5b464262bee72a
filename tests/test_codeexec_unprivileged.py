"""The sandbox judged as root and as an unprivileged user, with and without bubblewrap.

Root ignores RLIMIT_NPROC and most file permissions, so a suite that only runs as root (CI) cannot
see the bugs an ordinary user meets: here the adversarial cases of ``codeexec_cases.py`` and the
whole of ``test_codeexec.py`` also run as ``nobody`` (dropping privileges with Popen's
``user``/``group``), with bubblewrap, without it (with a user namespace of its own, with one
that has no capabilities as on Ubuntu 24.04, and with none), and while that user already runs 80
threads. Where the project's interpreter lives under a private home folder, the
runs use a system Python of the same version (``codeexec_cases.reachable_python``); where there
is none, they skip saying why, or fail when ``$CODEEXEC_UNPRIVILEGED_TESTS`` is ``required``
(``.ci/run`` sets it).
"""

import os
import subprocess
import warnings

import codeexec_cases as cases
import pytest

pytestmark = pytest.mark.slow
ROOT = os.geteuid() == 0
REQUIRED = os.environ.get("CODEEXEC_UNPRIVILEGED_TESTS") == "required"
SUITE_SETTINGS = [
    ("bwrap", 0),
    ("no-bwrap", 0),
    ("no-bwrap", cases.BUSY_THREADS),
    ("no-bwrap-ubuntu", cases.BUSY_THREADS),
    ("no-bwrap-no-userns", cases.BUSY_THREADS),
]


def label(setting):
    mode, threads = setting
    return mode + (f"+{threads}-threads" if threads else "")


def unavailable(reason: str):
    """Skip, or fail where these runs are required (CI)."""
    if REQUIRED:
        pytest.fail(f"required unprivileged run impossible: {reason}")
    pytest.skip(reason)


def wrong_rows(rows):
    return [(r["case"], r["status"], r["detail"], r["problems"], r["stderr"]) for r in rows]


@pytest.mark.parametrize("mode", list(cases.MODES))
def test_every_adversarial_case_is_judged_right_as_this_user(mode):
    rows = cases.run_setting(mode, 0)
    if mode == "bwrap" and "bubblewrap" not in rows[0]["protections"]:
        pytest.skip("bubblewrap cannot start here")
    assert not cases.wrong(rows), wrong_rows(cases.wrong(rows))


@pytest.mark.parametrize("setting", cases.UNPRIVILEGED_SETTINGS, ids=label)
def test_every_adversarial_case_is_judged_right_as_an_unprivileged_user(setting):
    mode, threads = setting
    if ROOT:
        try:
            rows = cases.run_setting_as(cases.UNPRIVILEGED_USER, mode, threads)
        except LookupError as exc:
            unavailable(str(exc))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rows = cases.run_setting(mode, threads)
    if mode == "bwrap" and "bubblewrap" not in rows[0]["protections"]:
        unavailable("bubblewrap cannot start for an unprivileged user here")
    assert not cases.wrong(rows), wrong_rows(cases.wrong(rows))
    if mode != "bwrap":  # the limits hold per run even though the user runs other threads
        assert {"processes", "processes-shared"} & set(rows[0]["protections"])


def run_suite(mode: str, threads: int, user: str | None) -> subprocess.CompletedProcess:
    """``pytest test_codeexec.py`` in ``mode`` as ``user`` (None: this user), on a readable copy."""
    try:
        context = cases.unprivileged(user or cases.current_user())
        prefix, env, copy = context.__enter__()
    except LookupError as exc:
        unavailable(str(exc))
    try:
        env = env | {cases.MODE_VARIABLE: mode, "OMP_NUM_THREADS": "1"}
        argv = [*prefix, "-m", "pytest", str(copy / "tests" / "test_codeexec.py")]
        argv += ["-q", "-p", "no:cacheprovider", "-rs", "-W", "ignore::RuntimeWarning"]
        with cases.busy_threads(threads, user):
            return cases.run_as(user, argv, env, copy)
    finally:
        context.__exit__(None, None, None)


@pytest.mark.parametrize("setting", SUITE_SETTINGS, ids=label)
def test_the_sandbox_tests_pass_as_an_unprivileged_user(setting):
    mode, threads = setting
    done = run_suite(mode, threads, cases.UNPRIVILEGED_USER if ROOT else None)
    tail = done.stdout[-3000:] + done.stderr[-2000:]
    assert done.returncode == 0, tail
    if mode == "bwrap" and "not held here" in done.stdout:
        unavailable("bubblewrap cannot start for an unprivileged user here:\n" + tail)


def test_the_sandbox_tests_pass_without_bubblewrap_as_root():
    if not ROOT:
        pytest.skip("not root")
    done = run_suite("no-bwrap", 0, None)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "not held here" not in done.stdout, done.stdout[-3000:]  # the fallback holds it all
