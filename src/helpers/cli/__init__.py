"""The course's one command line: ``python -m helpers <command>``.

Each command group is a module of this package (``COMMAND_MODULES``) whose
``add_commands(commands)`` registers its subcommands on argparse's subparsers, each with
``set_defaults(func=...)``: a thin function over a library call. ``--help`` on any command
says what it takes. The command functions import the heavy libraries (torch, Transformers)
themselves, so the command line starts fast.

Bad input never ends in a traceback. Numbers are checked by argparse (the types in
``helpers.cli.args``): it prints the usage and one line, exit status 2. Errors that are the
user's to fix (a data file or config that cannot be used, a model that cannot be loaded, a
file or folder named on the command line that is missing or unreadable) print one line
``error: ...`` on stderr, exit status 2. Anything else is a bug in the course: it is not
hidden, Python prints its traceback (exit status 1); please report it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# The command groups, in the order ``--help`` lists them: helpers.cli.<name>.add_commands.
COMMAND_MODULES = (
    "info",
    "data",
    "train",
    "chat",
    "serve",
    "bench",
    "bundle",
    "batch",
    "safety",
    "report",
    "export",
    "hosted",
)

# The library's errors that are the user's to fix, as (module, class): main prints them in
# one line. Looked up only in modules already imported, so the command line starts fast.
USER_ERRORS = (
    ("helpers.data", "DataFileError"),
    ("helpers.chat", "NothingToTrainError"),
    ("helpers.model_cache", "ModelLoadError"),
    ("helpers.cli.train_config", "ConfigError"),
    ("helpers.batch.grid", "GridError"),
    ("helpers.bundle", "BundleError"),
    ("helpers.safety.rulefile", "RuleFileError"),
    ("helpers.server.store", "DataFolderInUse"),
)
# Filesystem errors on a path the user named (they carry its name): one line, exit 2.
FILE_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def user_error(error: BaseException) -> int:
    """Print one ``error: ...`` line for a user's error and return exit status 2."""
    if isinstance(error, FileExistsError):  # from mkdir: a file where a folder should be
        message = f"{error.filename} exists and is not a folder"
    elif isinstance(error, OSError) and error.filename is not None:
        message = f"{error.filename}: {error.strerror or error}"
    else:
        message = str(error) or type(error).__name__
    print(f"error: {message}", file=sys.stderr)
    return 2


def _user_errors() -> tuple[type[Exception], ...]:
    """Return the classes of USER_ERRORS whose modules are imported (others cannot have raised)."""
    found = (getattr(sys.modules.get(module), name, None) for module, name in USER_ERRORS)
    return tuple(error for error in found if error is not None)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every command module's subcommands."""
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"helpers.cli.{name}").add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except FILE_ERRORS as error:
        if error.filename is None:  # not about a path: a bug, keep its traceback
            raise
        return user_error(error)
    except _user_errors() as error:
        return user_error(error)
