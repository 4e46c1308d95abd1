"""The `farm` command: a thin layer over farm.api. Errors become one red line and an exit code."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from farm import __version__
from farm.errors import EXIT_JOBS_FAILED, FarmError

app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode="rich",
                  help="Measure BERT-family models on small hardware: Jetson Nanos and emulated "
                       "2 GiB containers.")
# Logs and pipes get a width that fits the results table; terminals keep their own.
out = Console() if sys.stdout.isatty() else Console(width=160)
err = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)
_debug = {"on": False}

EXIT_INTERRUPTED, EXIT_INTERNAL = 130, 70


def boundary(command):
    """Turn farm's errors into one line and a distinct exit code (tracebacks only with --debug)."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except FarmError as error:
            if _debug["on"]:
                err.print_exception()
            err.print(f"[bold red]error:[/] {error.message}", highlight=False)
            if error.hint:
                err.print(f"[dim]hint: {error.hint}[/]", highlight=False)
            raise typer.Exit(error.exit_code)
        except KeyboardInterrupt:
            err.print("[magenta]interrupted:[/] running jobs were cancelled; "
                      "submit the same sweep again to finish it")
            raise typer.Exit(EXIT_INTERRUPTED)
        except typer.Exit:
            raise
        except Exception as error:  # a bug in farm: say so plainly
            if _debug["on"]:
                err.print_exception()
            err.print(f"[bold red]internal error:[/] {type(error).__name__}: {error} "
                      "(run with --debug for the traceback)", highlight=False)
            raise typer.Exit(EXIT_INTERNAL)
    return wrapper


def _version(value: bool):
    if value:
        out.print(f"farm {__version__}")
        raise typer.Exit()


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
         version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Show farm's version.")):
    _debug["on"] = debug


@app.command()
@boundary
def submit(
    sweep: Path = typer.Argument(..., help="The sweep file (YAML)."),
    inventory: Path = typer.Option(Path("inventory.yaml"), "--inventory", "-i",
                                   help="The inventory of devices."),
    db: Optional[str] = typer.Option(None, "--db", help="Database path or SQLAlchemy URL "
                                     "(default: $FARM_DB, else ./farm.db)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="HOST:PORT of an "
                                              "existing Ray cluster (default: a private one)."),
):
    """Run a sweep: expand it into jobs, run them on the devices, store every figure."""
    from farm.api import submit as run_sweep
    from farm.console import SweepProgress, results_table

    with SweepProgress(out) as progress:
        report = run_sweep(sweep, inventory, db=db, ray_address=ray_address, observer=progress)
    out.line()
    out.print(results_table(f"sweep {report.sweep}", report.results))
    counts = ", ".join(f"{n} {status}" for status, n in sorted(report.counts.items()))
    out.print(f"{report.total_jobs} jobs ({counts}); ran {report.ran} now.")
    if report.failed:
        raise typer.Exit(EXIT_JOBS_FAILED)


if __name__ == "__main__":
    sys.exit(app())
