"""Confinement for the codeexec harness: resource limits, privileges, namespaces, Landlock.

Copied into the sandbox beside the harness as ``confine.py``, which imports it from there (the
package ``helpers`` is out of reach with ``python -I -S``); ``helpers.codeexec`` imports it as
``helpers._codeexec_confine``. Like the harness, it imports only the standard library. The
calls are raw ``prctl``, ``capset``, ``unshare`` and Landlock syscalls through ctypes.
"""

import contextlib
import ctypes
import os
import resource
import stat
import sys

PR_SET_DUMPABLE, PR_SET_KEEPCAPS, PR_SET_NO_NEW_PRIVS = 4, 8, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 47, 2
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x4000, 0x40000
CAP_DAC_READ_SEARCH, CAP_VERSION_3 = 2, 0x20080522

# Landlock: the syscall numbers are the same on every architecture but alpha.
LANDLOCK_CREATE_RULESET, LANDLOCK_ADD_RULE, LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION, LANDLOCK_RULE_PATH_BENEATH = 1, 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_WRITES_V1 = sum(1 << bit for bit in range(4, 13))  # remove and make: dir, file, dev, sym...
FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15  # ABI 2, 3 and 5
FS_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6
DEVICES = {"/dev/null": FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE, "/dev/zero": FS_READ_FILE}
DEVICES |= {"/dev/urandom": FS_READ_FILE}


class RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]


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


def python_folders() -> list[str]:
    """The folders this interpreter reads its standard library and binary from."""
    return [sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))]


def reachable_by_others(paths: list[str]) -> bool:
    """Whether a user without privileges could walk to every path (each folder has o+x)."""
    for path in paths:
        folder = os.path.abspath(path)
        while True:
            with contextlib.suppress(OSError):
                if not os.stat(folder).st_mode & stat.S_IXOTH:
                    return False
            if folder == "/":
                break
            folder = os.path.dirname(folder)
    return True


def drop_privileges(uid: int, keep_read: bool = False) -> None:
    """As root, become a fresh unprivileged user so RLIMIT_NPROC applies (root is exempt).

    With ``keep_read`` the process keeps CAP_DAC_READ_SEARCH, also across exec (an ambient
    capability), so that it can still read an interpreter installed under a private home folder;
    Landlock then decides what it may read.
    """
    if not uid:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if keep_read:
        libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if keep_read and set_capabilities(libc, 1 << CAP_DAC_READ_SEARCH):
        libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_DAC_READ_SEARCH, 0, 0)


def set_capabilities(libc: ctypes.CDLL, mask: int) -> bool:
    """Keep exactly the capabilities in ``mask`` (below 32): effective, permitted, inheritable."""
    header, data = CapHeader(CAP_VERSION_3, 0), (CapData * 2)()
    data[0].effective = data[0].permitted = data[0].inheritable = mask
    return libc.capset(ctypes.byref(header), data) == 0


def enter_user_namespace(libc: ctypes.CDLL, map_ids: bool = True) -> bool:
    """Move into a new user namespace (same uid and gid where the kernel lets us map them).

    Its point is the process count: from Linux 5.14 RLIMIT_NPROC counts per user namespace.
    Where the map cannot be written (Ubuntu's AppArmor gives such namespaces no capabilities;
    ``map_ids=False`` does the same), the run stays unmapped: ``os.getuid()`` says 65534, and
    files it makes still belong to the user.
    """
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(CLONE_NEWUSER) != 0:
        return False
    if not map_ids:
        return True
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", None)):
        with contextlib.suppress(OSError), open(f"/proc/self/{name}", "w") as f:
            f.write(text or f"{gid} {gid} 1")
    return True


def mount_work_tmpfs(libc: ctypes.CDLL, size_mb: int, owner: int) -> bool:
    """Cap the work folder (the current one): a tmpfs of ``size_mb``, in a mount namespace.

    Needs CAP_SYS_ADMIN: root, or a user namespace with a uid map. ``owner`` gets the tmpfs.
    False where the kernel refuses; then the folder stays on the host's disk, uncapped.
    """
    work = os.getcwd()
    if libc.unshare(CLONE_NEWNS) != 0:
        return False
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:  # no mount leaks out
        return False
    options = f"size={size_mb}m,mode=0700,uid={owner},gid={owner}".encode()
    if libc.mount(b"tmpfs", work.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options) != 0:
        return False
    os.chdir(work)  # onto the new tmpfs, not the folder beneath it
    return True


def harden(libc: ctypes.CDLL) -> None:
    """Forbid gaining privileges (setuid binaries) and ptrace/proc access to this process."""
    if sys.platform == "linux":
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def landlock_abi(libc: ctypes.CDLL) -> int:
    """The Landlock ABI version of the running kernel; 0 where Landlock is unavailable."""
    if sys.platform != "linux":
        return 0
    libc.syscall.restype = ctypes.c_long
    version = libc.syscall(
        ctypes.c_long(LANDLOCK_CREATE_RULESET),
        None,
        ctypes.c_size_t(0),
        ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION),
    )
    return max(0, version)


def landlock(libc: ctypes.CDLL, readable: list[str], inputs: list[str], work: str) -> list[str]:
    """Restrict this thread (and what it starts) with Landlock; return the protections held.

    Reads and execution: ``readable`` (system and Python folders); reads: ``inputs``; everything
    but execution: beneath ``work``; a few device files. TCP bind and connect: nowhere (ABI 4+).
    Signals and abstract Unix sockets: only within the run (ABI 6+).
    """
    abi = landlock_abi(libc)
    if abi < 1:
        return []
    writes = FS_WRITE_FILE | FS_WRITES_V1 | (FS_REFER if abi >= 2 else 0)
    writes |= FS_TRUNCATE if abi >= 3 else 0
    handled = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR | writes | (FS_IOCTL_DEV if abi >= 5 else 0)
    attr = RulesetAttr(handled, NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0, 0)
    attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    ruleset = libc.syscall(
        ctypes.c_long(LANDLOCK_CREATE_RULESET),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
        ctypes.c_uint32(0),
    )
    if ruleset < 0:
        return []
    try:
        rules = [(path, FS_EXECUTE | FS_READ_FILE | FS_READ_DIR) for path in readable]
        rules += [(path, FS_READ_FILE | FS_READ_DIR) for path in inputs]
        rules += [(work, FS_READ_FILE | FS_READ_DIR | writes), *DEVICES.items()]
        for path, allowed in rules:
            if not add_path_rule(libc, ruleset, path, allowed & handled):
                return []
        if libc.syscall(ctypes.c_long(LANDLOCK_RESTRICT_SELF), ruleset, ctypes.c_uint32(0)):
            return []
    finally:
        os.close(ruleset)
    held = ["landlock", "writes", "reads", "devices"]
    return held + (["tcp"] if abi >= 4 else []) + (["signals"] if abi >= 6 else [])


def add_path_rule(libc: ctypes.CDLL, ruleset: int, path: str, allowed: int) -> bool:
    """Allow ``allowed`` beneath ``path`` (a missing path is skipped); False on a kernel error."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            allowed &= FS_FILE_RIGHTS
        rule = PathBeneathAttr(allowed, fd)
        added = libc.syscall(
            ctypes.c_long(LANDLOCK_ADD_RULE),
            ruleset,
            ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
            ctypes.byref(rule),
            ctypes.c_uint32(0),
        )
        return added == 0
    finally:
        os.close(fd)
