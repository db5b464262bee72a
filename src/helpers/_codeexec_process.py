"""How ``helpers.codeexec`` starts a run, reads its output and ends it, on the host side.

``run_folder`` makes a run's temporary folder; ``probe_scope`` finds whether systemd-run can cap
a run's memory in a cgroup; ``command`` builds the bubblewrap command line that runs the harness
in the sandbox (or, in the fallback, the plain one); ``collect`` reads its output up to a
deadline; ``stop`` kills whatever is left of the run and reaps it.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BOX_INPUTS, BOX_WORK = "/box/in", "/box/work"  # the read-only inputs and the tmpfs, inside
SYSTEM_PATHS = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/localtime",
)
WORK_MB = 64  # size of the tmpfs working folder (its /tmp and /dev/shm included)
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom")  # the only devices inside
WATCH_SECONDS = 0.1  # how often the fallback's work folder is measured, where no tmpfs caps it
STOP_SECONDS = 8.0  # how long the fallback's supervisor may take to kill what a run left


def command(bwrap, inputs, work, harness_args, info_fd) -> tuple[list[str], str, dict[str, str]]:
    """The argv, working folder and environment that run the harness, sandboxed if possible."""
    python = os.path.realpath(sys.executable)
    box_inputs, box_work = (BOX_INPUTS, BOX_WORK) if bwrap else (str(inputs), str(work))
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": box_work, "TMPDIR": box_work}
    argv = [python, "-I", "-S", "-u", f"{box_inputs}/harness.py", box_inputs, *harness_args]
    if not bwrap:
        return argv, box_work, env
    root = os.geteuid() == 0
    isolation = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
    isolation += ["--unshare-cgroup-try", "--as-pid-1", "--die-with-parent", "--new-session"]
    if root:  # the harness needs these two until it switches to its fresh uid
        isolation += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        isolation += ["--unshare-user", "--disable-userns"]
    readable = readable_paths(python)
    mounts = [arg for path in readable for arg in ("--ro-bind", path, path)]
    for parent in created_parents(readable):  # bwrap copies host modes: /root would stay 0700
        mounts += ["--chmod", "0755", parent]
    for folder in ("/box", "/dev"):  # made here, or bwrap would make them 0700
        mounts += ["--perms", "0755", "--dir", folder]
    mounts += ["--ro-bind", str(inputs), BOX_INPUTS]
    mounts += [arg for device in DEVICES for arg in ("--dev-bind", device, device)]
    mounts += ["--perms", "1777", "--size", str(WORK_MB << 20), "--tmpfs", BOX_WORK]
    mounts += ["--symlink", BOX_WORK, "/tmp", "--symlink", BOX_WORK, "/dev/shm"]  # one cap
    mounts += ["--remount-ro", "/"]  # last: the folders above hold the mount points
    setenv = [arg for name, value in env.items() for arg in ("--setenv", name, value)]
    sandbox = [bwrap, *isolation, *mounts, "--chdir", BOX_WORK, "--clearenv", *setenv]
    sandbox += ["--info-fd", str(info_fd), "--"]
    return sandbox + argv, str(work), env


def probe_scope(memory_mb: int, tasks: int) -> tuple[list[str], str]:
    """``(prefix, "")`` if ``systemd-run`` can run a command in a capped scope, else why not."""
    tool = shutil.which("systemd-run") if sys.platform == "linux" else None
    if tool is None:
        return [], "systemd-run is not installed"
    prefix = [tool] if os.geteuid() == 0 else [tool, "--user"]
    prefix += ["--scope", "--quiet", "--collect", "-p", f"MemoryMax={memory_mb}M"]
    prefix += ["-p", "MemorySwapMax=0", "-p", f"TasksMax={tasks}", "--"]
    try:
        done = subprocess.run(
            [*prefix, "true"], stdin=subprocess.DEVNULL, capture_output=True, timeout=15
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"systemd-run failed: {exc}"
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines() or ["no message"]
        return [], f"systemd-run cannot make a scope here: {said[-1]}"
    return prefix, ""


def run_folder(bwrap: str | None) -> tempfile.TemporaryDirectory:
    """A temporary folder for one run's inputs and work folder, removed afterwards.

    As root without bubblewrap the run's fresh uid must walk to it, so where ``$TMPDIR`` lies
    under a folder others cannot pass (a 0700 home), it goes to a system temporary folder.
    """
    base = None
    if not bwrap and os.geteuid() == 0 and sys.platform == "linux":
        from helpers import _codeexec_confine as confine

        candidates = (tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm")
        usable = [c for c in candidates if os.path.isdir(c) and confine.reachable_by_others([c])]
        if not usable:
            raise RuntimeError(
                "codeexec: running as root without bubblewrap, a run's folder must lie where an "
                f"unprivileged uid can reach it, but none of {', '.join(candidates)} can be used"
            )
        base = usable[0]
    return tempfile.TemporaryDirectory(prefix="codeexec-", dir=base, ignore_cleanup_errors=True)


def readable_paths(python: str) -> list[str]:
    """System folders and the Python installation, as the sandbox shows them (read-only)."""
    paths = [p for p in SYSTEM_PATHS if os.path.exists(p)]
    for prefix in (sys.base_prefix, os.path.dirname(os.path.dirname(python))):
        if not any(prefix == p or prefix.startswith(p + "/") for p in paths):
            paths.append(prefix)
    return paths


def created_parents(paths: list[str]) -> list[str]:
    """The folders bwrap creates to hold the mount points of ``paths``."""
    parents = {str(p) for path in paths for p in Path(path).parents if str(p) != "/"}
    return sorted(p for p in parents if not any(p == q or p.startswith(q + "/") for q in paths))


def collect(proc: subprocess.Popen, deadline: float, limit: int, watch=None) -> tuple:
    """Read stdout and stderr until the process ends; keep ``limit`` bytes each.

    Returns ``(stdout, stderr, stopped)``: ``stopped`` is ``"timeout"`` past the deadline,
    ``"disk"`` once the folder ``watch`` holds more than ``WORK_MB`` (checked every
    ``WATCH_SECONDS``), else ``""``.
    """
    kept = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    dropped = dict.fromkeys(kept, 0)

    def keep(fd: int, chunk: bytes) -> None:
        room = max(0, limit - len(kept[fd]))
        kept[fd] += chunk[:room]
        dropped[fd] += len(chunk) - len(chunk[:room])

    stopped, watched = "", time.monotonic()
    with selectors.DefaultSelector() as selector:
        for fd in kept:
            selector.register(fd, selectors.EVENT_READ)
        while proc.poll() is None:
            now = time.monotonic()
            if now > deadline:
                stopped = "timeout"
                break
            if watch is not None and now - watched > WATCH_SECONDS:
                watched = now
                if folder_bytes(watch) > WORK_MB << 20:
                    stopped = "disk"
                    break
            if not selector.get_map():  # both pipes closed early: wait for the exit itself
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(min(WATCH_SECONDS, max(0.0, deadline - now)))
                continue
            for key, _ in selector.select(0.02):
                chunk = os.read(key.fd, 1 << 16)
                keep(key.fd, chunk)
                if not chunk:
                    selector.unregister(key.fd)
    for fd in kept:  # what is still in the pipes (a leftover process may hold them open)
        keep(fd, drain(fd))
    texts = [
        data.decode("utf-8", "replace")
        + (f"\n[... {dropped[fd]} more bytes]" if dropped[fd] else "")
        for fd, data in kept.items()
    ]
    return texts[0], texts[1], stopped


def folder_bytes(folder: Path, most_entries: int = 100_000) -> int:
    """The disk space used beneath ``folder`` (past ``most_entries`` entries: unbounded)."""
    total, seen, todo = 0, 0, [str(folder)]
    while todo:
        with contextlib.suppress(OSError), os.scandir(todo.pop()) as entries:
            for entry in entries:
                seen += 1
                if seen > most_entries:
                    return 1 << 62
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(entry.path)
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
    return total


def drain(fd: int, limit: int = 1 << 20) -> bytes:
    """Read what a pipe holds right now, without waiting, up to ``limit`` bytes."""
    os.set_blocking(fd, False)
    chunks, size = [], 0
    with contextlib.suppress(BlockingIOError, OSError):
        while size < limit and (chunk := os.read(fd, 1 << 16)):
            chunks.append(chunk)
            size += len(chunk)
    return b"".join(chunks)


def stop(proc: subprocess.Popen, info_r: int, supervised: bool) -> None:
    """Kill whatever is left of a run, and reap it.

    With bwrap the harness is the PID namespace's init: killing it makes the kernel kill every
    process in the namespace before bwrap sees it exit, so nothing outlives the call. In the
    fallback, the process started is the run's supervisor: SIGTERM makes it kill every process
    the run left, wherever it went, and exit. The process group is killed last, in case the
    code killed its supervisor.
    """
    info = drain(info_r)
    os.close(info_r)
    child = child_pid(info)
    if child and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    if supervised and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_SECONDS)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()


def child_pid(info: bytes) -> int | None:
    """The ``child-pid`` from bwrap's ``--info-fd`` JSON, if it wrote one."""
    try:
        return int(json.loads(info)["child-pid"])
    except (ValueError, KeyError, TypeError):
        return None
