"""A pytest plugin for the notebooks' nbval runs: start a kernel again if it dies starting.

nbval starts one kernel per notebook and sends the kernel's stderr to /dev/null. When that
kernel dies before it answers (a clean-clone CI run here once got "Kernel died before
replying to kernel_info" for notebook 03, whose 79 cells then all failed), nothing says why
and the whole notebook fails. This plugin gives each start three tries and reports the
stderr of a failed one as a warning (in pytest's summary, also from xdist workers), or in
the error when the last try fails too. The Makefile's nbval runs load it:
``-p tests.nbval_kernel``. The unit tests' papermill runs, which start their kernels through
nbclient, go through :func:`run_again_if_the_kernel_dies` for the same reason, and a test that
starts a kernel itself wraps jupyter_client's ``start_new_kernel`` in :func:`retrying`.
"""

from __future__ import annotations

import tempfile
import warnings

import nbval.kernel

ATTEMPTS = 3
DIED_STARTING = "Kernel died before replying to kernel_info"  # jupyter_client's words


def retrying(start, attempts: int = ATTEMPTS):
    """Wrap nbval's ``start_new_kernel``: up to ``attempts`` starts, each failure reported."""

    def start_new_kernel(startup_timeout=60, kernel_name="python", **kwargs):
        kwargs.pop("stderr", None)  # nbval's /dev/null: a file that can be shown instead
        for attempt in range(1, attempts + 1):
            # Not a with block: the kernel writes here for as long as it runs.
            stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115
            try:
                return start(
                    startup_timeout=startup_timeout,
                    kernel_name=kernel_name,
                    stderr=stderr,
                    **kwargs,
                )
            except RuntimeError as error:
                stderr.seek(0)
                said = stderr.read().strip() or "(nothing)"
                stderr.close()
                message = (
                    f"kernel {kernel_name!r} died while starting (try {attempt} of "
                    f"{attempts}): {error}; its stderr: {said}"
                )
                if attempt == attempts:
                    raise RuntimeError(message) from error
                warnings.warn(message, stacklevel=2)

    return start_new_kernel


def pytest_configure(config):
    """Let nbval's kernels start again after a death at start-up."""
    nbval.kernel.start_new_kernel = retrying(nbval.kernel.start_new_kernel)


def run_again_if_the_kernel_dies(run, attempts: int = ATTEMPTS):
    """Return ``run()`` (a papermill run), run again if its kernel died while starting.

    Only that death is retried: no cell has run yet, so a second run starts from the same
    state. A kernel that dies later, while a cell runs, fails the test as it should.
    """
    for attempt in range(1, attempts + 1):
        try:
            return run()
        except RuntimeError as error:
            if DIED_STARTING not in str(error) or attempt == attempts:
                raise
            warnings.warn(
                f"a papermill kernel died while starting (try {attempt} of {attempts}): {error}",
                stacklevel=2,
            )
