"""The nbval plugin that starts a dying kernel again (tests/nbval_kernel.py), scripted."""

import pytest
from nbclient.exceptions import DeadKernelError
from nbval_kernel import DIED_STARTING, retrying, run_again_if_the_kernel_dies


def scripted_start(deaths: int):
    """A stand-in for nbval's start_new_kernel: dies ``deaths`` times, then starts."""
    calls = []

    def start(startup_timeout, kernel_name, stderr, **kwargs):
        calls.append(kwargs)
        if len(calls) <= deaths:
            stderr.write(f"ZMQError: Address already in use (start {len(calls)})\n")
            stderr.flush()
            raise RuntimeError("Kernel died before replying to kernel_info")
        return "manager", "client"

    return start, calls


def test_a_kernel_that_dies_once_starts_on_the_second_try_and_says_why():
    start, calls = scripted_start(deaths=1)
    with pytest.warns(UserWarning, match=r"try 1 of 3.*Address already in use \(start 1\)"):
        started = retrying(start)(kernel_name="k", stderr="nbval's /dev/null", cwd="runs/nbval")
    assert started == ("manager", "client")
    assert calls == [{"cwd": "runs/nbval"}] * 2  # nbval's other arguments, on every try


def test_a_kernel_that_keeps_dying_fails_with_its_last_stderr():
    start, calls = scripted_start(deaths=5)
    with pytest.warns(UserWarning) as warned, pytest.raises(RuntimeError) as failed:
        retrying(start)(kernel_name="k")
    assert len(calls) == 3 and len(warned) == 2
    assert "try 3 of 3" in str(failed.value) and "(start 3)" in str(failed.value)


def scripted_run(errors: list):
    """A stand-in for a papermill run: raises each of ``errors`` in turn, then finishes."""
    calls = []

    def run():
        calls.append(len(calls) + 1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "notebook"

    return run, calls


def test_a_papermill_run_whose_kernel_died_starting_runs_again():
    run, calls = scripted_run([RuntimeError(DIED_STARTING)])
    with pytest.warns(UserWarning, match="died while starting \\(try 1 of 3\\)"):
        assert run_again_if_the_kernel_dies(run) == "notebook"
    assert calls == [1, 2]


def test_a_kernel_that_dies_while_a_cell_runs_is_not_run_again():
    run, calls = scripted_run([DeadKernelError("Kernel died")])  # a RuntimeError too
    with pytest.raises(DeadKernelError):
        run_again_if_the_kernel_dies(run)
    assert calls == [1]


def test_a_papermill_kernel_that_keeps_dying_fails_after_the_last_try():
    run, calls = scripted_run([RuntimeError(DIED_STARTING)] * 3)
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match=DIED_STARTING):
        run_again_if_the_kernel_dies(run)
    assert calls == [1, 2, 3]
