"""The `farm` command: a thin layer over farm.api. Errors become one red line and an exit code."""
from __future__ import annotations

import contextlib
import functools
import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from typer._click.exceptions import (  # typer 0.29 carries its own click
    NoArgsIsHelpError, NoSuchOption, UsageError)
from typer.core import TyperArgument, TyperCommand, TyperGroup

from agents.spelling import with_guess
from farm import __version__
from farm.console import SweepProgress, shown, visible
from farm.errors import EXIT_JOBS_FAILED, DeviceError, FarmError


class _WordArgument(TyperArgument):
    """An argument shown as its NAME: no type after it, no braces around it in the usage line."""

    def display_type_rich(self, ctx):
        return None

    def get_usage_pieces(self, ctx):
        name = self.metavar or (self.name.upper() + ("..." if self.nargs != 1 else ""))
        return [name if self.required else f"[{name}]"]


class _InWords:
    """--help in words. typer (0.29) writes a type after every parameter (`<bool>`, `<str>`) and
    a required argument in braces (`{sweep}`); here an argument or an option's value reads as its
    metavar (SWEEP, FILE, N), and a flag, which takes no value, as nothing."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if isinstance(param, TyperArgument):  # typer builds these itself: no class to pass
                param.__class__ = _WordArgument
            elif getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class _Command(_InWords, TyperCommand):
    pass


class _Group(_InWords, TyperGroup):
    """Command lines that farm cannot read (an unknown command or option, a value an option
    does not take, one left out), found while reading them or raised by a command: one line and
    exit 2, as for a bad sweep file, rather than typer's box."""

    def parse_args(self, ctx, args):
        with _usage(ctx):
            return super().parse_args(ctx, args)

    def invoke(self, ctx):
        with _usage(ctx):
            return super().invoke(ctx)

    def resolve_command(self, ctx, args):
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            _fail(f"{ctx.command_path} has no command {name}",
                  with_guess(name, self.list_commands(ctx),
                             f"`{ctx.command_path} --help` lists its commands"), 2)
        return super().resolve_command(ctx, args)


@contextlib.contextmanager
def _usage(ctx):
    try:
        yield
    except NoArgsIsHelpError:
        raise  # a group called bare: its help, as asked
    except UsageError as error:
        command = error.ctx.command_path if error.ctx else ctx.command_path
        fix = f"`{command} --help` lists what it takes"
        if isinstance(error, NoSuchOption):
            message = f"{command} has no option {error.option_name}"
            fix = with_guess(error.option_name, error.possibilities or (), fix)
        else:
            # typer checks choices with pydantic, whose prefix says nothing to a user
            message = error.format_message().replace("Value error, ", "")
        _fail(message, fix, error.exit_code)


class _App(typer.Typer):
    """farm's commands and groups: help in words, Markdown docstrings (their lines are joined
    and wrapped to the terminal, never broken where the source's lines end)."""

    def __init__(self, **kwargs):
        super().__init__(cls=_Group, rich_markup_mode="markdown", add_completion=False, **kwargs)

    def command(self, *args, **kwargs):
        return super().command(*args, cls=_Command, **kwargs)


app = _App(no_args_is_help=True, help="Measure BERT-family models on small hardware: Jetson Nanos "
           "and emulated 2 GiB containers.")
# Logs and pipes get a width that fits the results table; terminals keep their own.
out = Console() if sys.stdout.isatty() else Console(width=160)
err = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)
_debug = {"on": False}

EXIT_INTERRUPTED, EXIT_INTERNAL = 130, 70

# Options that several commands take, defined once.
DB_OPTION = typer.Option(None, "--db", metavar="DB", help="Database path or SQLAlchemy URL "
                         "(default: $FARM_DB, else ./farm.db).")
INVENTORY_OPTION = typer.Option(Path("inventory.yaml"), "--inventory", "-i", metavar="FILE",
                                help="The inventory of devices.")
RAY_ADDRESS_OPTION = typer.Option(None, "--ray-address", metavar="HOST:PORT", help="An existing "
                                  "Ray cluster (default: a private one).")
SWEEP_ARGUMENT = typer.Argument(..., metavar="SWEEP", help="The sweep's name.")


def _fail(message: str, hint: str | None, exit_code: int):
    # One line each, whatever the width: scripts grep them, people read them whole.
    err.print(f"[bold red]error:[/] {shown(message, lines=False)}", highlight=False,
              soft_wrap=True)
    if hint:
        err.print(f"[dim]hint: {shown(hint, lines=False)}[/]", highlight=False, soft_wrap=True)
    raise typer.Exit(exit_code)


def boundary(command):
    """Turn farm's errors into one line and a distinct exit code (tracebacks only with --debug)."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except FarmError as error:
            if _debug["on"]:
                err.print_exception()
            _fail(error.message, error.hint, error.exit_code)
        except KeyboardInterrupt:
            err.print("[magenta]interrupted[/]")
            raise typer.Exit(EXIT_INTERRUPTED)
        except (typer.Exit, typer.BadParameter):  # the latter: _Group.invoke says it
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
    out.print(results_table(f"sweep {sweep}", report.results, report.baselines))
    if has_methods(report.results):
        out.print(methods_table(f"sweep {sweep}: methods against eager fp32", report.results,
                                report.baselines))
    if has_streams(report.results):
        out.print(streaming_table(f"sweep {sweep}: streamed layers against eager",
                                  report.results, report.baselines))
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
    else:
        from rich.table import Table
        table = Table(header_style="bold", pad_edge=False)
        for column in columns:
            table.add_column(shown(column, lines=False))
        for row in rows:  # a database's text, shown as it is: brackets and control characters too
            table.add_row(*[shown(v, lines=False) for v in row])
        out.print(table)
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
                                                   help="A row per device too (default: only "
                                                   "where two devices ran the same work)."),
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

    from farm.readers import report_rows
    from farm.report import write_report

    rows, against_fp32 = report_rows(sweep, db)
    written = write_report(rows, out_dir, f"farm report: sweep {sweep}", against_fp32,
                           per_device=per_device, processes=os.cpu_count() or 1)
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
    out.print(Tall(differences_table(against, differences, by_what)))  # its thousands of rows


devices_app = _App(help="The inventory's devices: state, health, trust.")
app.add_typer(devices_app, name="devices")
# A subcommand's own -i/--db, where given, wins over the group's (`farm devices -i lab.yaml check`).
OWN_INVENTORY_OPTION = typer.Option(None, "--inventory", "-i", metavar="FILE",
                                    help="The inventory of devices (default: the one "
                                    "`farm devices` was given, else inventory.yaml).")
OWN_DB_OPTION = typer.Option(None, "--db", metavar="DB", help="Database path or SQLAlchemy URL "
                             "(default: the one `farm devices` was given, else $FARM_DB, else "
                             "./farm.db).")


def _or_group(ctx: typer.Context, name: str, own):
    """A `farm devices` subcommand's own option where given, else the group's."""
    return ctx.parent.params[name] if own is None else own


@devices_app.callback(invoke_without_command=True)
@boundary
def devices(ctx: typer.Context, inventory: Path = INVENTORY_OPTION, db: Optional[str] = DB_OPTION):
    """Table of devices: name, kind, state, last seen, current job (from the database only)."""
    if ctx.invoked_subcommand is not None:
        return
    from farm.readers import device_table
    from farm.console import devices_table
    out.print(devices_table(device_table(inventory, db)))


@devices_app.command("check")
@boundary
def devices_check(ctx: typer.Context,
                  names: Optional[list[str]] = typer.Argument(None, metavar="DEVICE...",
                                                              help="Devices (default: all)."),
                  inventory: Optional[Path] = OWN_INVENTORY_OPTION):
    """Reach each device and read what it offers: host key, login, python, torch, transformers,
    free memory, power mode, clocks, tegrastats, cgroup."""
    from farm.api import check_devices
    from farm.console import checks_table
    from farm.devices.health import FAIL

    with err.status("checking devices..."):
        results = check_devices(_or_group(ctx, "inventory", inventory), names)
    for name, checks in results.items():
        out.print(checks_table(name, checks))
    failing = [n for n, checks in results.items() if any(c.status == FAIL for c in checks)]
    if failing:
        err.print(f"[bold red]not ready:[/] {shown(', '.join(failing))}", highlight=False)
        raise typer.Exit(DeviceError.exit_code)


@devices_app.command("trust")
@boundary
def devices_trust(ctx: typer.Context,
                  name: str = typer.Argument(..., metavar="DEVICE", help="The device (one "
                                             "reached over SSH, e.g. kind: jetson)."),
                  yes: bool = typer.Option(False, "--yes", "-y", help="Pin without asking."),
                  inventory: Optional[Path] = OWN_INVENTORY_OPTION):
    """Show the board's host key fingerprint, and pin it after a yes."""
    from farm.api import host_key, trust

    offer = host_key(_or_group(ctx, "inventory", inventory), name)
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
def devices_release(ctx: typer.Context,
                    name: str = typer.Argument(..., metavar="DEVICE", help="The device."),
                    inventory: Optional[Path] = OWN_INVENTORY_OPTION,
                    db: Optional[str] = OWN_DB_OPTION):
    """Return a quarantined device to service by hand (a sweep otherwise health-checks it)."""
    from farm.api import release_device

    if release_device(_or_group(ctx, "inventory", inventory), name, _or_group(ctx, "db", db)):
        out.print(f"[green]released[/] {shown(name)}: it takes jobs again", highlight=False)
    else:
        out.print(f"{shown(name)} was not quarantined", highlight=False)


sweeps_app = _App(no_args_is_help=True, help="The sweeps in the database.")
app.add_typer(sweeps_app, name="sweeps")


@sweeps_app.command("rm")
@boundary
def sweeps_rm(sweep: str = SWEEP_ARGUMENT,
              yes: bool = typer.Option(False, "--yes", "-y", help="Remove without asking."),
              db: Optional[str] = DB_OPTION):
    """Remove a sweep with its jobs, results, scores and attempts, in one transaction, so that
    its name is free for another sweep file. Refused while a farm run drives it."""
    from farm.api import remove_sweep

    if not yes and not typer.confirm(f"Remove sweep {visible(sweep)} and every result in it?"):
        err.print("nothing removed")
        raise typer.Exit(1)
    removed = remove_sweep(sweep, db)
    out.print(f"removed sweep {shown(sweep)} ({removed} jobs)", highlight=False)


exits_app = _App(no_args_is_help=True, help="Exit heads for early exit.")
app.add_typer(exits_app, name="exits")


@exits_app.command("fit")
@boundary
def exits_fit(checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT",
                                                help="A fine-tuned checkpoint folder."),
              task: str = typer.Option(..., "--task", "-t", metavar="TASK",
                                       help="Its GLUE task (sst2, mnli-m...)."),
              data_dir: Path = typer.Option(..., "--data-dir", "-d", metavar="DIR",
                                            help="The GLUE distribution (TASK/train.tsv and its "
                                            "dev file)."),
              out_dir: Optional[Path] = typer.Option(None, "--out", "-o", metavar="DIR",
                                                     help="Where to save (default: "
                                                     "CHECKPOINT-exits)."),
              epochs: int = typer.Option(3, "--epochs", min=1, metavar="N",
                                         help="Passes over train.tsv."),
              max_train: Optional[int] = typer.Option(None, "--max-train", min=1, metavar="N",
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
