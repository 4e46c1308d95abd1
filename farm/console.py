"""What a person watching `farm submit` sees: a Rich progress bar while it runs (the tables that
end it: farm.results_view); `farm devices` and its checks; `farm exits fit`'s progress; and the
helpers every view uses to show text farm did not write (shown, visible)."""
from __future__ import annotations

import re
import time

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

from farm.results import FINAL, Status

STATUS_STYLE = {Status.DONE: "green", Status.OOM: "yellow", Status.TIMEOUT: "yellow",
                Status.FAILED: "red", Status.CANCELLED: "magenta", Status.QUEUED: "dim",
                Status.RUNNING: "cyan"}


# C0 and C1 controls, DEL, and the bidirectional overrides that reorder what a terminal shows.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def visible(value, lines: bool = True) -> str:
    """`value` as text that a terminal shows as it is: every control character (ESC included,
    so no escape sequence from a file, a database or a device reaches the terminal) written out
    as \\xNN; newlines and tabs kept where `lines`, else written out too."""
    def spell(match) -> str:
        char = match.group()
        if lines and char in "\n\t":
            return char
        return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100
                                    else f"\\u{ord(char):04x}")
    return _CONTROLS.sub(spell, "" if value is None else str(value))


def shown(value, lines: bool = True) -> str:
    """Anything farm did not write itself (a name, a path, an error, a database value), made
    safe to put in Rich markup: its own brackets are text, never styles."""
    return escape(visible(value, lines))


def job_label(spec: dict) -> str:
    return shown(f"{spec['model']['name']} {spec['variant']} {spec['task']} "
                 f"b{spec['batch_size']} s{spec['seq_len']}")


class SweepProgress:
    """An Observer (farm.controller) drawing one bar for the sweep and one line per device."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console)
        self.devices = Progress(SpinnerColumn(), TextColumn("{task.description}"), console=console)
        self.live = Live(Group(self.progress, self.devices), console=console,
                         refresh_per_second=4)
        self.sweep_task = None
        self.device_tasks: dict[str, int] = {}

    def __enter__(self):
        self.live.start()
        return self

    def __exit__(self, *exc):
        self.live.stop()

    def _device_line(self, device: str, text: str) -> None:
        if device not in self.device_tasks:
            self.device_tasks[device] = self.devices.add_task("", total=None)
        self.devices.update(self.device_tasks[device],
                            description=f"[bold]{shown(device)}[/] {text}")

    def sweep_started(self, name: str, to_run: int, total: int) -> None:
        done = total - to_run
        note = f" ({done} of {total} already measured)" if done else ""
        self.sweep_task = self.progress.add_task(f"[bold]{shown(name)}[/]{note}", total=to_run)

    def devices_ready(self, facts: dict[str, dict]) -> None:
        for name, fact in sorted(facts.items()):
            limit = fact.get("memory_limit_mb")
            where = f"{limit:.0f} MiB, {fact['threads']} thread(s)" if limit else "no memory limit"
            self._device_line(name, f"[dim]ready ({where})[/]")

    def warning(self, message: str, fix: str) -> None:
        self.console.print(f"[bold yellow]warning:[/] {shown(message)}", highlight=False)
        self.console.print(f"[dim]hint: {shown(fix)}[/]", highlight=False)

    def device_refused(self, name: str, error) -> None:
        self._device_line(name, "[red]not used[/]")
        self.console.print(f"[bold red]device {shown(name)} not used:[/] {shown(error.message)}",
                           highlight=False)
        if error.hint:
            self.console.print(f"[dim]hint: {shown(error.hint)}[/]", highlight=False)

    def job_started(self, job, device: str) -> None:
        self._device_line(device, f"{job_label(job.spec)} [cyan]starting[/]")

    def job_phase(self, job, device: str, phase: str) -> None:
        self._device_line(device, f"{job_label(job.spec)} [cyan]{phase}[/]")

    def job_finished(self, job, outcome: dict) -> None:
        status = outcome["status"]
        self.progress.advance(self.sweep_task)
        if outcome.get("device"):
            self._device_line(outcome["device"], "[dim]idle[/]")
        if status != Status.DONE:
            style = STATUS_STYLE.get(status, "red")
            self.console.print(f"[{style}]{status}[/] {job_label(job.spec)} on "
                               f"{shown(outcome.get('device'))}: {shown(outcome.get('error'))}",
                               highlight=False)

    def job_retried(self, job, outcome: dict, attempt: int) -> None:
        if outcome.get("device"):
            self._device_line(outcome["device"], "[dim]idle[/]")
        self.console.print(f"[yellow]retry[/] {job_label(job.spec)}: attempt {attempt} on "
                           f"{shown(outcome.get('device'))} failed (infrastructure): "
                           f"{shown(outcome.get('error'))}", highlight=False)

    def device_quarantined(self, name: str, reason: str) -> None:
        self._device_line(name, "[red]quarantined[/]")
        self.console.print(f"[bold red]device {shown(name)} quarantined:[/] {shown(reason)}; it "
                           "gets a health check before it is used again (`farm devices release "
                           f"{shown(name)}` returns it by hand)", highlight=False, soft_wrap=True)

    def cancelling(self, why: str, running: int) -> None:
        self.console.print(f"[magenta]{shown(why)}:[/] cancelling the sweep: stopping {running} "
                           "running job(s); queued jobs end cancelled, done results stay",
                           highlight=False, soft_wrap=True)

    def took_over(self, dead) -> None:
        self.console.print(f"[yellow]note:[/] the farm run of sweep {shown(dead.sweep)} (pid "
                           f"{dead.pid} on {shown(dead.host)}) stopped without ending (last "
                           f"heartbeat {dead.last_heartbeat:%H:%M:%S} UTC); its devices are free "
                           f"again and its {dead.requeued} running job(s) were requeued",
                           highlight=False, soft_wrap=True)


def submit_summary(report) -> str:
    """The line that ends `farm submit` and `farm resume` (a farm.api.SubmitReport): the sweep
    file's jobs, how many ended each final way, those cancelled or not run where there are
    some, and how many ran to an end now."""
    counts = report.counts
    parts = [f"{counts.get(status, 0)} {status}" for status in FINAL]
    if counts.get(Status.CANCELLED):
        parts.append(f"{counts[Status.CANCELLED]} cancelled")
    if report.not_run:
        parts.append(f"{report.not_run} not run")
    jobs = "job" if report.total_jobs == 1 else "jobs"
    return f"{report.total_jobs} {jobs} ({', '.join(parts)}); ran {report.ran} now."


def _num(value, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _temperature(device: dict) -> str:
    """The device's temperature at the end of its latest timed window; red where a clock fell
    during it (throttled)."""
    if device.get("temp_c") is None:
        return ""
    text = f"{device['temp_c']:.1f} °C"
    return f"[red]{text} throttled[/]" if device.get("throttled") else text


DEVICE_STATE_STYLE = {"idle": "green", "busy": "cyan", "offline": "red", "refused": "red",
                      "quarantined": "bold red",
                      "error": "red", "unknown": "dim"}
CHECK_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skipped": "dim"}


def devices_table(rows: list[dict]) -> Table:
    table = Table(title="devices", header_style="bold", pad_edge=False)
    for name in ("name", "kind", "where", "state", "last seen", "current job", "last error"):
        table.add_column(name, no_wrap=name != "last error")
    for r in rows:
        style = DEVICE_STATE_STYLE.get(r["state"], "")
        current = ""
        if r["state"] == "busy" and r.get("model"):
            current = (shown(f"{r['model']} {r['variant']} b{r['batch_size']} s{r['seq_len']}")
                       + (f" [cyan]{shown(r['phase'])}[/]" if r.get("phase") else ""))
        table.add_row(shown(r["name"]), shown(r["kind"]), shown(r["where"]),
                      f"[{style}]{shown(r['state'])}[/]", _age(r.get("last_seen")), current,
                      shown(r.get("last_error")))
    return table


def checks_table(device: str, checks) -> Table:
    table = Table(title=shown(device), header_style="bold", pad_edge=False, title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("", no_wrap=True)
    table.add_column("what was read")
    for c in checks:
        table.add_row(shown(c.item), f"[{CHECK_STYLE.get(c.status, '')}]{c.status}[/]",
                      shown(c.detail))
    return table


def _when(value):
    from datetime import datetime
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _age(then, now=None) -> str:
    """'12s ago' from a UTC time (a datetime, or SQLite's text), against `now` (default: now)."""
    from datetime import datetime, timezone
    then = _when(then)
    if then is None:
        return "never"
    now = _when(now) or datetime.now(timezone.utc).replace(tzinfo=None)
    seconds = max((now - then).total_seconds(), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


class PhaseProgress:
    """One bar per phase of a long command: `farm exits fit` (reading the train set, the dev
    set, training), `farm report` (its charts). Drawn as each update comes, with no thread of
    its own (at most ten times a second): `farm report` forks its drawing processes meanwhile,
    and a fork copies no thread (a lock one held would stay held in the copy). `transient`:
    gone once done."""

    def __init__(self, console: Console, transient: bool = False):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), console=console, auto_refresh=False,
                                 transient=transient,
                                 # gone once done: nothing to show where nothing is redrawn
                                 disable=transient and not console.is_terminal)
        self.phases: dict[str, int] = {}
        self.drawn = 0.0  # when the bars were last drawn (time.monotonic)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def update(self, phase: str, done: int, total: int) -> None:
        if phase not in self.phases:
            self.phases[phase] = self.progress.add_task(phase, total=total)
        self.progress.update(self.phases[phase], completed=done)
        now = time.monotonic()
        if done >= total or now - self.drawn >= 0.1:
            self.progress.refresh()
            self.drawn = now
