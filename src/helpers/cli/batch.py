"""``batch`` (notebooks over a parameter grid), ``workshop`` (every notebook) and ``scrub``."""

from __future__ import annotations

import argparse

from helpers.cli.args import existing_file, positive_int


def grid_param(text: str) -> tuple[str, object]:
    """A ``NAME=VALUE`` or ``NAME=[V1,V2]`` batch parameter (a YAML value; a list sweeps)."""
    import yaml

    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE or NAME=[V1,V2], got {text!r}")
    try:
        value = yaml.safe_load(value)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or error
        raise argparse.ArgumentTypeError(
            f"{text!r}: the value is not valid YAML ({problem})"
        ) from None
    return name, value


def cmd_batch(args: argparse.Namespace) -> int:
    """Run notebooks over a parameter grid (parallel, resumable) and print the results table."""
    from helpers.batch import find_notebooks, pool
    from helpers.batch.grid import load_grid
    from helpers.batch.results import results_table, short_table
    from helpers.paths import display_path, output_dir

    notebooks = [n.resolve() for n in args.notebooks] or find_notebooks()
    if not notebooks:
        print("No notebooks found in notebooks/ yet.")
        return 0
    grid = load_grid(args.grid) if args.grid else {}
    grid.update(dict(args.param))  # -p wins over the grid file
    out = output_dir(args.out)
    show = tuple(args.show)
    runs, written = pool.run_grid(notebooks, grid, out, args.jobs, args.scheduler, show)
    swept = list(dict.fromkeys(name for run in runs for name in run.swept))
    table = short_table(results_table(runs), swept, show)
    print(table.to_string(index=False, max_colwidth=28))
    print("\nResults: " + ", ".join(display_path(path) for path in written))
    return 0 if all(run.record.get("status") == "ok" for run in runs) else 1


def cmd_workshop(args: argparse.Namespace) -> int:
    """Prepare the embedded model, then run every notebook with its defaults, one at a time."""
    from helpers import model_cache
    from helpers.paths import output_dir

    out = output_dir(args.out)  # a bad --out fails now, not after preparing the model
    model_cache.prepare_embedded_model()
    print(f"Embedded model ready: {model_cache.embedded_model_dir()}")
    args.notebooks, args.param, args.grid, args.out = [], [], None, out
    args.jobs, args.scheduler, args.show = args.jobs or 1, None, []  # up to 4 GB per run
    return cmd_batch(args)


def cmd_scrub(args: argparse.Namespace) -> int:
    """Strip machine paths and the host name from executed notebooks (before committing them)."""
    from helpers.batch.scrub import scrub_notebook

    for notebook in args.notebooks:
        print(f"{notebook}: {scrub_notebook(notebook)} outputs scrubbed")
    return 0


def add_commands(commands) -> None:
    """Register ``batch``, ``workshop`` and ``scrub``."""
    _add_batch(commands)
    workshop = commands.add_parser(
        "workshop", help="prepare the model and run every notebook with its defaults"
    )
    workshop.add_argument("--out", help="output folder (default runs/<timestamp>)")
    workshop.add_argument("--jobs", type=positive_int, help="runs at once (default 1)")
    workshop.set_defaults(func=cmd_workshop)

    scrub = commands.add_parser(
        "scrub",
        help="strip machine paths and the host name from executed notebooks; widget "
        "progress bars become text bars",
    )
    scrub.add_argument("notebooks", nargs="+", type=existing_file, help="notebooks to scrub")
    scrub.set_defaults(func=cmd_scrub)


def _add_batch(commands) -> None:
    """Register ``batch`` and its grid options."""
    run = commands.add_parser(
        "batch",
        help="run notebooks over a parameter grid (papermill; parallel, resumable)",
        description="Run each notebook once per combination of the grid, each into its own "
        "folder under --out; a second call with the same --out skips finished runs and "
        "retries failed ones. Writes results.csv, results.md and comparison.png.",
    )
    run.add_argument(
        "notebooks",
        nargs="*",
        type=existing_file,
        help="notebooks to run (default: all in notebooks/)",
    )
    run.add_argument(
        "--grid", type=existing_file, help="YAML file: parameter -> value, or list of values"
    )
    run.add_argument(
        "-p",
        "--param",
        action="append",
        type=grid_param,
        default=[],
        metavar="NAME=VALUE",
        help="a parameter value, or a YAML list of values to sweep; wins over --grid",
    )
    run.add_argument("--out", help="output folder (default runs/<timestamp>); reuse it to resume")
    run.add_argument(
        "--jobs",
        type=positive_int,
        help="runs at once (default: as many as the cores and memory hold, 4.5 GB each)",
    )
    run.add_argument(
        "--scheduler", metavar="ADDRESS", help="run on a Dask cluster (tcp://host:8786)"
    )
    run.add_argument(
        "--show",
        action="append",
        default=[],
        metavar="METRIC",
        help="add a metric of metrics.json to the printed and Markdown tables; repeatable",
    )
    run.set_defaults(func=cmd_batch)
