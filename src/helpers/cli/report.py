"""``report``: the README's and the instructor's guide's figures, from the notebooks' runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _collect(root: Path, notebooks: list[Path]) -> int:
    """Copy each notebook's canonical run metrics into notebooks/metrics/."""
    from helpers.report.collect import collect
    from helpers.report.collect import notebooks as all_notebooks

    for notebook in notebooks or all_notebooks(root):
        target = collect(notebook, root)
        print(f"{notebook.name}: its run's metrics -> {target.relative_to(root)}")
    return 0


def _collect_avx2(root: Path, executed: list[Path]) -> int:
    """Copy the metrics of executed copies (runs/avx2/NN_name.ipynb) to notebooks/metrics/avx2/."""
    from helpers.report.collect import AVX2_DIR, collect

    for notebook in executed:
        # make notebooks-avx2 runs each copy with output_dir next to it: runs/avx2/NN_name/
        output_dir = notebook.parent / notebook.stem
        target = collect(notebook, root, output_dir=output_dir, into=AVX2_DIR)
        print(f"{notebook.name}: its fp32 run's metrics -> {target.relative_to(root)}")
    return 0


def _check(root: Path) -> int:
    """Exit 1, naming each block and its first differing figure, when a document differs."""
    from helpers.report.documents import DOCUMENTS, check_report

    found = check_report(root)
    names = " and ".join(str(path) for path in DOCUMENTS)
    if found:
        for line in found:
            print(line, file=sys.stderr)
        print(
            f"{names} differ from notebooks/metrics/: run `python -m helpers report` "
            "(after `make notebooks`, or after editing a generated block by hand)",
            file=sys.stderr,
        )
        return 1
    print(f"{names}: every generated block matches notebooks/metrics/")
    return 0


def _write(root: Path) -> int:
    """Rewrite the generated blocks; warn about figures a run did not record."""
    from helpers.report.documents import DOCUMENTS, write_report

    changed, missing = write_report(root)
    for line in missing:
        print(f"warning: {line}", file=sys.stderr)
    for path in DOCUMENTS:
        print(f"{path}: {'rewritten' if path in changed else 'already up to date'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write (or check) the documents' generated blocks, or collect the runs' metrics."""
    from helpers.cli import user_error
    from helpers.paths import repo_root
    from helpers.report import ReportError

    root = repo_root()
    try:
        if args.collect is not None:
            return _collect(root, args.collect)
        if args.collect_avx2:
            return _collect_avx2(root, args.collect_avx2)
        return _check(root) if args.check else _write(root)
    except ReportError as error:
        return user_error(error)


def add_commands(commands) -> None:
    """Register ``report``."""
    report = commands.add_parser(
        "report",
        help="README and instructor's guide figures and claims scorecard, from the notebooks",
        description="Rewrite the generated blocks of README.md and docs/instructor.md "
        "(between <!-- report:NAME --> and <!-- /report:NAME -->) from the canonical runs' "
        "metrics in notebooks/metrics/*.json. --check changes nothing: exit 1 naming the "
        "first differing figure of each block. --collect copies each notebook's run "
        "metrics (runs/<output_dir>/metrics.json) there; `make notebooks` does it.",
    )
    mode = report.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if a generated block differs from what report would write",
    )
    mode.add_argument(
        "--collect",
        nargs="*",
        type=Path,
        metavar="NOTEBOOK",
        help="copy these notebooks' (default: every notebook's) run metrics into "
        "notebooks/metrics/",
    )
    mode.add_argument(
        "--collect-avx2",
        nargs="+",
        type=Path,
        metavar="EXECUTED",
        help="copy the metrics of these executed copies (runs/avx2/NN_name.ipynb, written by "
        "`make notebooks-avx2`) into notebooks/metrics/avx2/",
    )
    report.set_defaults(func=cmd_report)
