"""The `farm` command: a thin layer over farm.api. Errors become one red line and an exit code."""
from __future__ import annotations

import contextlib
import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from farm import __version__
from farm.cli_base import (DB_OPTION, EXIT_INTERRUPTED, INVENTORY_OPTION, RAY_ADDRESS_OPTION,
                           SWEEP_ARGUMENT, _App, _debug, boundary, err, out)
from farm.cli_groups import devices_app, exits_app, sweeps_app
from farm.console import SweepProgress, shown, visible
from farm.errors import EXIT_JOBS_FAILED, DeviceError, FarmError


app = _App(no_args_is_help=True, help="Measure BERT-family models on small hardware: Jetson Nanos "
           "and emulated 2 GiB containers.")


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
    sweep: Path = typer.Argument(..., metavar="FILE", help="The sweep file (YAML)."),
    inventory: Path = INVENTORY_OPTION,
    db: Optional[str] = DB_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and expand the sweep, and "
                                 "print the jobs per target, those already done, the model "
                                 "groups and an estimate from earlier results; write nothing, "
                                 "start nothing."),
):
    """Run a sweep: expand it into jobs, run them on the devices, store every figure."""
    from farm.api import submit as run_sweep

    if dry_run:
        from farm.plan import dry_run as plan, to_rich

        out.print(to_rich(plan(sweep, inventory, db)))
        return
    with _progress() as progress:
        report = run_sweep(sweep, inventory, db=db, ray_address=ray_address, observer=progress)
    _finish(report)


@app.command()
@boundary
def resume(
    sweep: str = SWEEP_ARGUMENT,
    db: Optional[str] = DB_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
):
    """Finish a sweep as last submitted (after a crash, Ctrl-C or cancel): only the jobs not yet
    finished run."""
    from farm.api import resume as resume_sweep

    with _progress(sweep) as progress:
        report = resume_sweep(sweep, db=db, ray_address=ray_address, observer=progress)
    _finish(report)


class _NamedProgress(SweepProgress):
    """SweepProgress that keeps the sweep's name (a submit learns it when the sweep starts)."""

    def __init__(self, console: Console, sweep: str | None):
        super().__init__(console)
        self.sweep = sweep

    def sweep_started(self, name: str, to_run: int, total: int) -> None:
        self.sweep = name
        super().sweep_started(name, to_run, total)


@contextlib.contextmanager
def _progress(sweep: str | None = None):
    """A sweep's progress while it runs; on Ctrl-C, the command that finishes it."""
    progress = _NamedProgress(out, sweep)
    try:
        with progress:
            yield progress
    except KeyboardInterrupt:
        again = (f"{_resume_command(progress.sweep)} (or the same submit)" if progress.sweep
                 else "the same submit")  # stopped before a submitted sweep was named
        err.print(f"[magenta]interrupted:[/] the sweep's running and queued jobs were cancelled; "
                  f"{again} finishes it", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED)


def _resume_command(sweep: str) -> str:
    return f"`farm resume {shown(shlex.quote(sweep))}`"


def _exits(title: str, rows: list[dict]) -> None:
    """Early exit's table (farm.exits), where the sweep has early-exit jobs."""
    from farm.exits import exits_table, is_exit

    if any(is_exit(r) for r in rows):
        out.print(exits_table(f"{title}: early exit against full depth", rows))


def _finish(report) -> None:
    from farm.comparisons import has_methods, has_streams
    from farm.console import submit_summary
    from farm.results_view import methods_table, results_table, streaming_table

    out.line()
    sweep = shown(report.sweep)
    out.print(results_table(f"sweep {sweep}", report.results, report.baselines, out.width))
    if has_methods(report.results):
        out.print(methods_table(f"sweep {sweep}: methods against eager fp32", report.results,
                                report.baselines, out.width))
    if has_streams(report.results):
        out.print(streaming_table(f"sweep {sweep}: streamed layers against eager",
                                  report.results, report.baselines, out.width))
    _exits(f"sweep {sweep}", report.results)
    out.print(submit_summary(report), highlight=False)
    if report.cancelled:
        err.print(f"[magenta]cancelled[/] by `farm cancel`; {_resume_command(report.sweep)} "
                  "finishes it", highlight=False)
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
def cancel(sweep: str = SWEEP_ARGUMENT, db: Optional[str] = DB_OPTION):
    """Stop a sweep: running jobs are killed, they and the queued ones end `cancelled`; done
    results stay. Works from any terminal while `farm submit` runs elsewhere."""
    from farm.api import cancel as cancel_sweep

    counts = cancel_sweep(sweep, db)
    listed = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    out.print(f"sweep {shown(sweep)}: {listed}", highlight=False)


STATUS_JSON_HELP = (
    "Print one snapshot as a JSON document and exit, for scripts. Keys: now (the database's "
    "UTC time); sweeps (each: name, state running|incomplete|finished, total, done, oom, failed, "
    "running, queued, cancelled, last_finished, run_started, run_ended, finished_in_run, "
    "rate_per_min and eta_s of its newest run, null until it has finished two jobs); devices "
    "(each: name, kind, pool, state, last_seen, last_error, the current job's model, variant, "
    "task, batch_size, seq_len, phase, started_at, and the board's power_mw, board_ram_mb, "
    "temp_c, throttled); latest (the 8 newest results); failures (the 8 newest failed jobs). "
    "Times are UTC text, 'YYYY-MM-DD HH:MM:SS' (stored ones with microseconds).")


@app.command()
@boundary
def status(once: bool = typer.Option(False, "--once", help="Print one snapshot and exit (for "
                                     "scripts and non-terminals)."),
           json_out: bool = typer.Option(False, "--json", help=STATUS_JSON_HELP),
           interval: float = typer.Option(1.0, "--interval", min=0.2, metavar="SECONDS",
                                          help="Seconds between refreshes."),
           db: Optional[str] = DB_OPTION):
    """Live view of sweeps (progress, jobs per minute and ETA of the run under way), devices
    (a line per pool and state when there are many), latest results and failures, fitted to
    the terminal's width; reads only the database, so it never slows a sweep and works with no
    Ray running. Ctrl-C leaves it."""
    import json
    import time

    from rich.live import Live

    from farm.readers import status_snapshot
    from farm.status_view import StatusView

    if json_out:
        sys.stdout.write(json.dumps(status_snapshot(db), default=str, indent=2) + "\n")
    elif once or not sys.stdout.isatty():
        out.print(StatusView(status_snapshot(db)))
    else:
        with Live(StatusView(status_snapshot(db)), console=out, auto_refresh=False,
                  screen=False) as live:
            try:
                while True:
                    time.sleep(interval)
                    live.update(StatusView(status_snapshot(db)), refresh=True)
            except KeyboardInterrupt:
                pass


@app.command("sql")
@boundary
def sql_command(query: str = typer.Argument(..., metavar="QUERY",
                                            help="One SQL statement (read-only)."),
                csv_out: bool = typer.Option(False, "--csv", help="CSV on stdout."),
                json_out: bool = typer.Option(False, "--json", help="JSON lines on stdout."),
                timeout: float = typer.Option(60.0, "--timeout", min=0.001, max=86400,
                                              metavar="SECONDS",
                                              help="Stop the query after this many seconds."),
                db: Optional[str] = DB_OPTION):
    """Query the results (views v_results, v_latest, v_devices; tables jobs, results, sweeps,
    model_loads, devices). Read-only: a write statement fails and changes nothing."""
    import csv
    import json

    from farm.readers import sql

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
    else:  # a database's text, shown as it is: brackets and control characters too
        from farm.fit import query_table
        out.print(query_table(columns, rows, out.width))
        err.print(f"[dim]{len(rows)} row(s)[/]")


class TableFormat(str, Enum):
    """How `farm table` writes the table: Rich on the terminal, or text for a paper."""
    rich = "rich"
    markdown = "markdown"
    md = "md"  # markdown, shorter
    csv = "csv"
    latex = "latex"


class ExportFormat(str, Enum):
    """The file `farm export` writes (farm.export)."""
    csv = "csv"
    json = "json"
    parquet = "parquet"


def _listed(choices: type[Enum]) -> str:
    *others, last = [choice.value for choice in choices]
    return f"{', '.join(others)} or {last}"


@app.command()
@boundary
def table(sweep: str = SWEEP_ARGUMENT,
          fmt: TableFormat = typer.Option(TableFormat.rich, "--format", "-f", metavar="FORMAT",
                                          help=f"{_listed(TableFormat)}: Rich on the terminal, "
                                          "or text for a paper."),
          batch_size: Optional[int] = typer.Option(None, "--batch-size", metavar="N",
                                                   help="Figures at this batch size (default: "
                                                   "1, else the smallest)."),
          by_device: Optional[bool] = typer.Option(None, "--by-device/--no-by-device",
                                                   help="A row per device too (default: a row per "
                                                   "pool where several ran the same work; per "
                                                   "device only where two devices of one did)."),
          db: Optional[str] = DB_OPTION):
    """The researchers' table: a row per model variant, a column group per task with accuracy,
    latency per sample and peak memory."""
    from farm.fit import Tall
    from farm.readers import table_rows
    from farm.tables import research_table, to_csv, to_latex, to_markdown, to_rich

    renderers = {TableFormat.markdown: to_markdown, TableFormat.md: to_markdown,
                 TableFormat.csv: to_csv, TableFormat.latex: to_latex}
    rows = table_rows(sweep, db)
    try:
        made = research_table(rows, by_device, batch_size=batch_size)
    except ValueError as error:
        raise FarmError(f"cannot make the table of {sweep!r}: {error}") from None
    if fmt == TableFormat.rich:
        out.print(Tall(to_rich(made, title=f"sweep {sweep}")))  # to_rich: the title as text
        _exits(f"sweep {shown(sweep)}", rows)
    else:
        sys.stdout.write(renderers[fmt](made))


@app.command()
@boundary
def report(sweep: str = SWEEP_ARGUMENT,
           out_dir: Path = typer.Option(Path("report"), "--out", "-o", metavar="DIR",
                                        help="Folder to write."),
           per_device: bool = typer.Option(False, "--per-device", help="Charts per device "
                                           "too (default: per pool of devices)."),
           db: Optional[str] = DB_OPTION):
    """Per pool of devices: Pareto fronts (score against latency and memory; without scores,
    latency against memory), latency by batch size, memory against the limit and each method's
    speed-up against what it saves, as PNG and SVG; and one HTML page: the researchers' table,
    the charts, the environment, each variant against fp32 (the non-significant marked ~) and
    every job."""
    import os

    from farm.console import PhaseProgress
    from farm.readers import report_reading
    from farm.report import write_report

    rows, against_fp32 = report_reading(sweep, db)  # compared while the charts are drawn
    with PhaseProgress(out, transient=True) as progress:
        written = write_report(rows, out_dir, f"farm report: sweep {sweep}", against_fp32,
                               per_device=per_device, processes=os.cpu_count() or 1,
                               on_chart=lambda done, of: progress.update("charts", done, of))
    for path in written:
        out.print(f"wrote {shown(path)}", highlight=False)


@app.command()
@boundary
def export(sweep: str = SWEEP_ARGUMENT,
           fmt: ExportFormat = typer.Option(ExportFormat.csv, "--format", "-f", metavar="FORMAT",
                                            help=f"{_listed(ExportFormat)}."),
           out_file: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE",
                                                   help="File to write (default: "
                                                   "SWEEP.FORMAT)."),
           db: Optional[str] = DB_OPTION):
    """Every result of a sweep, with the raw per-call latencies, as csv, json or parquet."""
    from farm.readers import sweep_rows
    from farm.export import export_rows

    rows, latencies = sweep_rows(sweep, db, with_latencies=True)
    path = export_rows(rows, latencies, fmt.value, out_file or Path(f"{sweep}.{fmt.value}"))
    out.print(f"wrote {shown(path)} ({len(rows)} jobs)", highlight=False)


@app.command("compare")
@boundary
def compare_command(
        sweep: str = typer.Argument(..., metavar="SWEEP", help="The sweep (with a second one: "
                                    "the baseline)."),
        other: Optional[str] = typer.Argument(None, metavar="OTHER", help="A second sweep: the "
                                              "same jobs in it against the first's."),
        by: str = typer.Option("variant", "--by", metavar="variant|device",
                               help="Within one sweep: variant or device."),
        baseline: Optional[str] = typer.Option(None, "--baseline", metavar="NAME",
                                               help="The variant (default fp32) or device the "
                                               "others are compared with."),
        as_csv: bool = typer.Option(False, "--csv", help="CSV on stdout."),
        as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
        min_change: float = typer.Option(0.02, "--min-change", metavar="RATIO",
                                         help="The smallest change in the ratio called faster "
                                         "or slower (0.02: 2%)."),
        db: Optional[str] = DB_OPTION):
    """Is it really faster? Each result against its baseline on the same work: the ratio of
    median latencies with a 95% bootstrap interval, a Mann-Whitney p-value, and a verdict
    (faster, slower, or ~ for no significant difference); peak memory and score differences.
    With a sweep's repeats on both sides, judged between repeats (each repeat's median)."""
    import csv
    import json

    from farm.compare_view import difference_records, differences_table
    from farm.fit import Tall
    from farm.readers import compare

    if as_csv and as_json:
        raise typer.BadParameter("give one of them, not both", param_hint="--csv/--json")
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
    # Tall: its thousands of rows drawn at a fraction of Rich's cost
    out.print(Tall(differences_table(against, differences, by_what, out.width)))


app.add_typer(devices_app, name="devices")  # after the commands, in --help's order
app.add_typer(sweeps_app, name="sweeps")
app.add_typer(exits_app, name="exits")

if __name__ == "__main__":
    sys.exit(app())
