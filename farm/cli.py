"""The `farm` command: a thin layer over farm.api. Errors become one red line and an exit code."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from farm import __version__
from farm.console import shown, visible
from farm.errors import EXIT_JOBS_FAILED, DeviceError, FarmError

app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode="rich",
                  help="Measure BERT-family models on small hardware: Jetson Nanos and emulated "
                       "2 GiB containers.")
# Logs and pipes get a width that fits the results table; terminals keep their own.
out = Console() if sys.stdout.isatty() else Console(width=160)
err = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)
_debug = {"on": False}

EXIT_INTERRUPTED, EXIT_INTERNAL = 130, 70

# Options that several commands take, defined once.
DB_OPTION = typer.Option(None, "--db", help="Database path or SQLAlchemy URL (default: $FARM_DB, "
                         "else ./farm.db).")
INVENTORY_OPTION = typer.Option(Path("inventory.yaml"), "--inventory", "-i",
                                help="The inventory of devices.")
RAY_ADDRESS_OPTION = typer.Option(None, "--ray-address", help="HOST:PORT of an existing Ray "
                                  "cluster (default: a private one).")


def boundary(command):
    """Turn farm's errors into one line and a distinct exit code (tracebacks only with --debug)."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except FarmError as error:
            if _debug["on"]:
                err.print_exception()
            # One line each, whatever the width: scripts grep them, people read them whole.
            err.print(f"[bold red]error:[/] {shown(error.message, lines=False)}",
                      highlight=False, soft_wrap=True)
            if error.hint:
                err.print(f"[dim]hint: {shown(error.hint, lines=False)}[/]", highlight=False,
                          soft_wrap=True)
            raise typer.Exit(error.exit_code)
        except KeyboardInterrupt:
            err.print("[magenta]interrupted:[/] the sweep's running and queued jobs were "
                      "cancelled; `farm resume SWEEP` (or the same submit) finishes it")
            raise typer.Exit(EXIT_INTERRUPTED)
        except typer.Exit:
            raise
        except Exception as error:  # a bug in farm: say so plainly
            if _debug["on"]:
                err.print_exception()
            err.print(f"[bold red]internal error:[/] {type(error).__name__}: "
                      f"{shown(error, lines=False)} "
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
    inventory: Path = INVENTORY_OPTION,
    db: Optional[str] = DB_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
):
    """Run a sweep: expand it into jobs, run them on the devices, store every figure."""
    from farm.api import submit as run_sweep
    from farm.console import SweepProgress

    with SweepProgress(out) as progress:
        report = run_sweep(sweep, inventory, db=db, ray_address=ray_address, observer=progress)
    _finish(report)


@app.command()
@boundary
def resume(
    sweep: str = typer.Argument(..., help="The sweep's name."),
    db: Optional[str] = DB_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
):
    """Finish a sweep as last submitted (after a crash, Ctrl-C or cancel): only the jobs not yet
    finished run."""
    from farm.api import resume as resume_sweep
    from farm.console import SweepProgress

    with SweepProgress(out) as progress:
        report = resume_sweep(sweep, db=db, ray_address=ray_address, observer=progress)
    _finish(report)


def _exits(title: str, rows: list[dict]) -> None:
    """Early exit's table (farm.exits), where the sweep has early-exit jobs."""
    from farm.exits import exits_table, is_exit

    if any(is_exit(r) for r in rows):
        out.print(exits_table(f"{title}: early exit against full depth", rows))


def _finish(report) -> None:
    from farm.comparisons import has_methods, has_streams
    from farm.console import methods_table, results_table, streaming_table

    out.line()
    sweep = shown(report.sweep)
    out.print(results_table(f"sweep {sweep}", report.results))
    if has_methods(report.results):
        out.print(methods_table(f"sweep {sweep}: methods against eager fp32", report.results))
    if has_streams(report.results):
        out.print(streaming_table(f"sweep {sweep}: streamed layers against eager",
                                  report.results))
    _exits(f"sweep {sweep}", report.results)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(report.counts.items()))
    out.print(f"{report.total_jobs} jobs ({counts}); ran {report.ran} now.")
    if report.cancelled:
        err.print(f"[magenta]cancelled[/] by `farm cancel`; `farm resume {sweep}` "
                  "finishes it")
        raise typer.Exit(EXIT_INTERRUPTED)
    if report.not_run:
        unused = shown(", ".join(report.refused)) or "none usable"
        err.print(f"[bold red]error:[/] {report.not_run} job(s) not run: no usable device for "
                  f"them (refused: {unused}); fix the device and submit again", highlight=False)
        raise typer.Exit(DeviceError.exit_code)
    if report.failed:
        raise typer.Exit(EXIT_JOBS_FAILED)


@app.command()
@boundary
def cancel(sweep: str = typer.Argument(..., help="The sweep's name."),
           db: Optional[str] = DB_OPTION):
    """Stop a sweep: running jobs are killed, they and the queued ones end `cancelled`; done
    results stay. Works from any terminal while `farm submit` runs elsewhere."""
    from farm.api import cancel as cancel_sweep

    counts = cancel_sweep(sweep, db)
    listed = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    out.print(f"sweep {shown(sweep)}: {listed}", highlight=False)


@app.command()
@boundary
def status(once: bool = typer.Option(False, "--once", help="Print one snapshot and exit (for "
                                     "scripts and non-terminals)."),
           interval: float = typer.Option(1.0, "--interval", min=0.2, help="Seconds between "
                                          "refreshes."),
           db: Optional[str] = DB_OPTION):
    """Live view of sweeps, devices, latest results and failures; reads only the database, so it
    never slows a sweep and works with no Ray running. Ctrl-C leaves it."""
    import time

    from rich.live import Live

    from farm.api import status_snapshot
    from farm.console import status_view

    if once or not sys.stdout.isatty():
        out.print(status_view(status_snapshot(db)))
        return
    with Live(status_view(status_snapshot(db)), console=out, auto_refresh=False,
              screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(status_view(status_snapshot(db)), refresh=True)
        except KeyboardInterrupt:
            pass


@app.command("sql")
@boundary
def sql_command(query: str = typer.Argument(..., help="One SQL statement (read-only)."),
                csv_out: bool = typer.Option(False, "--csv", help="CSV on stdout."),
                json_out: bool = typer.Option(False, "--json", help="JSON lines on stdout."),
                timeout: float = typer.Option(60.0, "--timeout", min=0.001, max=86400,
                                              help="Stop the query after this many seconds."),
                db: Optional[str] = DB_OPTION):
    """Query the results (views v_results, v_latest, v_devices; tables jobs, results, sweeps,
    model_loads, devices). Read-only: a write statement fails and changes nothing."""
    import csv
    import json

    from farm.api import sql

    columns, rows = sql(query, db, timeout_s=timeout)
    if csv_out:
        writer = csv.writer(sys.stdout)
        # CSV is data for programs, byte for byte; on a terminal its control characters show.
        cell = (lambda v: visible(v, lines=False)) if sys.stdout.isatty() else (lambda v: v)
        writer.writerow(map(cell, columns))
        writer.writerows([cell(v) for v in row] for row in rows)
    elif json_out:
        for row in rows:
            sys.stdout.write(json.dumps(dict(zip(columns, row)), default=str) + "\n")
    else:
        from rich.table import Table
        table = Table(header_style="bold", pad_edge=False)
        for column in columns:
            table.add_column(shown(column, lines=False))
        for row in rows:  # a database's text, shown as it is: brackets and control characters too
            table.add_row(*[shown(v, lines=False) for v in row])
        out.print(table)
        err.print(f"[dim]{len(rows)} row(s)[/]")


@app.command()
@boundary
def table(sweep: str = typer.Argument(..., help="The sweep's name."),
          fmt: str = typer.Option("rich", "--format", "-f", help="rich, markdown, csv or latex."),
          batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Figures at this "
                                                   "batch size (default: 1, else the smallest)."),
          by_device: Optional[bool] = typer.Option(None, "--by-device/--no-by-device",
                                                   help="A row per device too (default: when "
                                                   "the sweep used several)."),
          db: Optional[str] = DB_OPTION):
    """The researchers' table: a row per model variant, a column group per task with accuracy,
    latency per sample and peak memory."""
    from farm.api import sweep_rows
    from farm.tables import research_table, to_csv, to_latex, to_markdown, to_rich

    renderers = {"markdown": to_markdown, "md": to_markdown, "csv": to_csv, "latex": to_latex}
    if fmt != "rich" and fmt not in renderers:
        raise typer.BadParameter("use rich, markdown, csv or latex", param_hint="--format")
    try:
        made = research_table(sweep_rows(sweep, db), by_device, batch_size=batch_size)
    except ValueError as error:
        raise FarmError(f"cannot make the table of {sweep!r}: {error}") from None
    if fmt == "rich":
        out.print(to_rich(made, title=f"sweep {sweep}"))  # to_rich shows the title as text
        _exits(f"sweep {shown(sweep)}", sweep_rows(sweep, db))
    else:
        sys.stdout.write(renderers[fmt](made))


@app.command()
@boundary
def report(sweep: str = typer.Argument(..., help="The sweep's name."),
           out_dir: Path = typer.Option(Path("report"), "--out", "-o", help="Folder to write."),
           db: Optional[str] = DB_OPTION):
    """PNG plots (measured Pareto fronts, latency vs batch size, memory against the limit) and
    one HTML page with them, each variant's time against fp32's (as farm compare judges it,
    the non-significant marked ~) and the table."""
    from farm.api import sweep_rows, variants_against_fp32
    from farm.report import write_report

    written = write_report(sweep_rows(sweep, db), out_dir, f"farm report: sweep {sweep}",
                           variants_against_fp32(sweep, db))
    for path in written:
        out.print(f"wrote {shown(path)}", highlight=False)


@app.command()
@boundary
def export(sweep: str = typer.Argument(..., help="The sweep's name."),
           fmt: str = typer.Option("csv", "--format", "-f", help="csv, json or parquet."),
           out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="File to write "
                                                   "(default: SWEEP.FORMAT)."),
           db: Optional[str] = DB_OPTION):
    """Every result of a sweep, with the raw per-call latencies, as csv, json or parquet."""
    from farm.api import sweep_rows
    from farm.export import export_rows

    if fmt not in ("csv", "json", "parquet"):
        raise typer.BadParameter("use csv, json or parquet", param_hint="--format")
    rows, latencies = sweep_rows(sweep, db, with_latencies=True)
    path = export_rows(rows, latencies, fmt, out_file or Path(f"{sweep}.{fmt}"))
    out.print(f"wrote {shown(path)} ({len(rows)} jobs)", highlight=False)


@app.command("compare")
@boundary
def compare_command(
        sweep: str = typer.Argument(..., help="The sweep (with a second one: the baseline)."),
        other: Optional[str] = typer.Argument(None, help="A second sweep: the same jobs in it "
                                              "against the first's."),
        by: str = typer.Option("variant", "--by", help="Within one sweep: variant or device."),
        baseline: Optional[str] = typer.Option(None, "--baseline", help="The variant (default "
                                               "fp32) or device the others are compared with."),
        as_csv: bool = typer.Option(False, "--csv", help="CSV on stdout."),
        as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
        min_change: float = typer.Option(0.02, "--min-change", help="The smallest change in "
                                         "the ratio called faster or slower (0.02: 2%)."),
        db: Optional[str] = DB_OPTION):
    """Is it really faster? Each result against its baseline on the same work: the ratio of
    median latencies with a 95% bootstrap interval, a Mann-Whitney p-value, and a verdict
    (faster, slower, or ~ for no significant difference); peak memory and score differences.
    With a sweep's repeats on both sides, judged between repeats (each repeat's median)."""
    import csv
    import json

    from farm.api import compare
    from farm.console import difference_records, differences_table

    if as_csv and as_json:
        raise typer.BadParameter("one of --csv and --json", param_hint="--csv/--json")
    differences = compare(sweep, other, by, baseline, db, min_change)
    by_what = "sweep" if other else by
    if as_csv or as_json:
        records = difference_records(differences, by_what)
        if as_json:
            sys.stdout.write(json.dumps(records, indent=1) + "\n")
        else:
            fields = list(records[0]) if records else ["model"]
            writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(records)
        return
    if other:
        against = f"sweep {shown(other)} against sweep {shown(sweep)}"
    else:
        base = differences[0].baseline[by] if differences else baseline or "fp32"
        against = f"sweep {shown(sweep)}: each {by} against {shown(base)}"
    if not differences:
        out.print(f"{against}: nothing to compare (no done result has a done baseline on the "
                  "same work)", highlight=False)
        return
    out.print(differences_table(against, differences, by_what))


devices_app = typer.Typer(no_args_is_help=False, help="The inventory's devices: state, health, trust.")
app.add_typer(devices_app, name="devices")


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
        err.print(f"[bold red]not ready:[/] {shown(', '.join(failing))}", highlight=False)
        raise typer.Exit(DeviceError.exit_code)


@devices_app.command("trust")
@boundary
def devices_trust(name: str = typer.Argument(..., help="The device (one reached over SSH, "
                                                         "e.g. kind: jetson)."),
                  yes: bool = typer.Option(False, "--yes", "-y", help="Pin without asking."),
                  inventory: Path = INVENTORY_OPTION):
    """Show the board's host key fingerprint, and pin it after a yes."""
    from farm.api import host_key, trust

    offer = host_key(inventory, name)
    who, address, known_hosts = shown(name), shown(offer.address), shown(offer.known_hosts)
    out.print(f"{who} at {address} presents {offer.key_type} key "
              f"[bold]{offer.fingerprint}[/]", highlight=False)
    if offer.state == "trusted":
        out.print(f"[green]already trusted[/] ({known_hosts})", highlight=False)
        return
    if offer.state == "changed":
        err.print(f"[bold red]warning: the host key CHANGED.[/] {known_hosts} pins "
                  f"{offer.pinned_fingerprint}. Pin the new key only if you know why it changed "
                  "(the board was reinstalled); otherwise someone may be in the middle.",
                  highlight=False)
    if not yes and not typer.confirm(f"Pin this key for {visible(name)} in "
                                     f"{visible(offer.known_hosts)}?"):
        err.print("nothing pinned")
        raise typer.Exit(1)
    trust(offer)
    out.print(f"[green]pinned[/] {offer.fingerprint} for {address} in {known_hosts}",
              highlight=False)


@devices_app.command("release")
@boundary
def devices_release(name: str = typer.Argument(..., help="The device."),
                    inventory: Path = INVENTORY_OPTION, db: Optional[str] = DB_OPTION):
    """Return a quarantined device to service by hand (a sweep otherwise health-checks it)."""
    from farm.api import release_device

    if release_device(inventory, name, db):
        out.print(f"[green]released[/] {shown(name)}: it takes jobs again", highlight=False)
    else:
        out.print(f"{shown(name)} was not quarantined", highlight=False)


exits_app = typer.Typer(no_args_is_help=True, help="Exit heads for early exit.")
app.add_typer(exits_app, name="exits")


@exits_app.command("fit")
@boundary
def exits_fit(checkpoint: Path = typer.Argument(..., help="A fine-tuned checkpoint folder."),
              task: str = typer.Option(..., "--task", "-t", help="Its GLUE task (sst2, mnli-m..."),
              data_dir: Path = typer.Option(..., "--data-dir", "-d", help="The GLUE distribution "
                                            "(TASK/train.tsv and its dev file)."),
              out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to save "
                                                     "(default: CHECKPOINT-exits)."),
              epochs: int = typer.Option(3, "--epochs", min=1, help="Passes over train.tsv."),
              max_train: Optional[int] = typer.Option(None, "--max-train", min=1,
                                                      help="Use the first N train examples.")):
    """Fit one exit head per layer to a checkpoint that has none (DeeBERT's second stage: the
    backbone frozen), report each exit's dev accuracy, and save a checkpoint early_exit loads."""
    from farm.console import FitProgress
    from farm.exits import fit, table

    with FitProgress(out) as progress:
        report = fit(checkpoint, task, data_dir, out_dir, epochs=epochs, max_train=max_train,
                     progress=progress.update)
    out.print(table(report))
    out.print(f"wrote {shown(report.out_dir)}", highlight=False)

if __name__ == "__main__":
    sys.exit(app())
