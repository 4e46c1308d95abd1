"""The `farm` command: a thin layer over farm.api. Errors become one red line and an exit code."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from farm import __version__
from farm.errors import EXIT_JOBS_FAILED, DeviceError, FarmError

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
    if report.not_run:
        unused = ", ".join(report.refused) or "none usable"
        err.print(f"[bold red]error:[/] {report.not_run} job(s) not run: no usable device for "
                  f"them (refused: {unused}); fix the device and submit again", highlight=False)
        raise typer.Exit(DeviceError.exit_code)
    if report.failed:
        raise typer.Exit(EXIT_JOBS_FAILED)


devices_app = typer.Typer(no_args_is_help=False, help="The inventory's devices: state, health, trust.")
app.add_typer(devices_app, name="devices")
INVENTORY_OPTION = typer.Option(Path("inventory.yaml"), "--inventory", "-i",
                                help="The inventory of devices.")
DB_OPTION = typer.Option(None, "--db", help="Database path or SQLAlchemy URL (default: $FARM_DB, "
                         "else ./farm.db).")


@devices_app.callback(invoke_without_command=True)
@boundary
def devices(ctx: typer.Context, inventory: Path = INVENTORY_OPTION, db: Optional[str] = DB_OPTION):
    """Table of devices: name, kind, state, last seen, current job (from the database only)."""
    if ctx.invoked_subcommand is not None:
        return
    from farm.api import device_table
    from farm.console import devices_table
    out.print(devices_table(device_table(inventory, db)))


@devices_app.command("check")
@boundary
def devices_check(names: Optional[list[str]] = typer.Argument(None, help="Devices (default: all)."),
                  inventory: Path = INVENTORY_OPTION):
    """Reach each device and read what it offers: host key, login, python, torch, transformers,
    free memory, power mode, clocks, tegrastats, cgroup."""
    from farm.api import check_devices
    from farm.console import checks_table
    from farm.devices.health import FAIL

    with err.status("checking devices..."):
        results = check_devices(inventory, names)
    for name, checks in results.items():
        out.print(checks_table(name, checks))
    failing = [n for n, checks in results.items() if any(c.status == FAIL for c in checks)]
    if failing:
        err.print(f"[bold red]not ready:[/] {', '.join(failing)}", highlight=False)
        raise typer.Exit(DeviceError.exit_code)


@devices_app.command("trust")
@boundary
def devices_trust(name: str = typer.Argument(..., help="The device (kind: jetson)."),
                  yes: bool = typer.Option(False, "--yes", "-y", help="Pin without asking."),
                  inventory: Path = INVENTORY_OPTION):
    """Show the board's host key fingerprint, and pin it after a yes."""
    from farm.api import host_key, trust

    offer = host_key(inventory, name)
    out.print(f"{name} at {offer.address} presents {offer.key_type} key "
              f"[bold]{offer.fingerprint}[/]", highlight=False)
    if offer.state == "trusted":
        out.print(f"[green]already trusted[/] ({offer.known_hosts})")
        return
    if offer.state == "changed":
        err.print(f"[bold red]warning: the host key CHANGED.[/] {offer.known_hosts} pins "
                  f"{offer.pinned_fingerprint}. Pin the new key only if you know why it changed "
                  "(the board was reinstalled); otherwise someone may be in the middle.",
                  highlight=False)
    if not yes and not typer.confirm(f"Pin this key for {name} in {offer.known_hosts}?"):
        err.print("nothing pinned")
        raise typer.Exit(1)
    trust(offer)
    out.print(f"[green]pinned[/] {offer.fingerprint} for {offer.address} in {offer.known_hosts}",
              highlight=False)


if __name__ == "__main__":
    sys.exit(app())
