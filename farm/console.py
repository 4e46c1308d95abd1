"""What a person watching `farm submit` sees: a Rich progress bar while it runs, then a table."""
from __future__ import annotations

import re

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

from farm.results import FINAL, Status, label

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


# A row's figures came from a window a reviewer should doubt (agents/measure.py, conditions.py).
FLAGS = (("noisy", "noisy", "IQR above 10% of the median"),
         ("host_busy", "busy host", "other processes took over 10% of its CPUs"),
         ("throttled", "throttled", "a clock fell during the window"))


def flags(row: dict) -> str:
    return ", ".join(word for column, word, _ in FLAGS if row.get(column))


_SAME_JOB = ("model", "variant", "task", "seq_len", "batch_size", "target")


def results_table(title: str, rows: list[dict], elsewhere: dict | None = None) -> Table:
    """One row per job; tasks and sequence lengths get a column only when the sweep varies them.
    An oom row shows the memory its container reached when the job was killed; Δlogit is
    against the model's eager fp32 on the same work, from the rows or `elsewhere`
    (farm.comparisons.compare)."""
    varying = [c for c in ("task", "seq_len", "repeat") if len({r.get(c) for r in rows}) > 1]
    if "repeat" in varying:  # a job's repeats one under the other, in their order
        position = {id(r): i for i, r in enumerate(rows)}
        first = {}
        for r in rows:
            first.setdefault(tuple(r.get(c) for c in _SAME_JOB), position[id(r)])
        rows = sorted(rows, key=lambda r: (first[tuple(r.get(c) for c in _SAME_JOB)],
                                           r.get("repeat") or 1))
    scored = any(r.get("metric") or r.get("score_note") for r in rows)  # GLUE tasks ran
    # The job's own memory where it was measured (0012 on); the container's peak before it.
    memory = "memory_mb" if any(r.get("memory_mb") is not None for r in rows) else "peak_mem_mb"
    limited = [c for c in ("memory_limit_mb", "headroom_mb")
               if any(_memory(r, c) is not None for r in rows)]
    gaps = _logit_gaps(rows, elsewhere)
    flagged = [r for r in rows if flags(r)]
    table = Table(title=title, header_style="bold", pad_edge=False,
                  caption=_results_caption(rows, flagged, gaps) or None)
    for name in ("model", "variant", *varying, "batch_size", "device", "status"):
        table.add_column(label(name), no_wrap=True)
    for name in ("score",) * scored + ("p50_ms", "per_sample_ms", memory, *limited, "flops",
                                       "params") + ("Δlogit",) * bool(gaps):
        table.add_column(label(name), justify="right")
    if flagged:
        table.add_column("doubt", style="yellow")
    for r in rows:
        style = STATUS_STYLE.get(r["status"], "")
        score = [f"{r['metric']} {r['score']:.3f}" if r.get("score") is not None else
                 "[dim]no score[/]" if r.get("score_note") else "–"] if scored else []
        table.add_row(
            shown(r["model"]), shown(r["variant"]), *[shown(r[c]) for c in varying],
            str(r["batch_size"]), shown(r["device"]), f"[{style}]{r['status']}[/]", *score,
            _num(r["p50_ms"], ".2f"), _num(r["per_sample_ms"], ".2f"),
            *[_memory_cell(r, c) for c in (memory, *limited)],
            _num(r["flops"] and r["flops"] / 1e9, ".3f"),
            _num(r["params"] and r["params"] / 1e6, ".2f"),
            *[_gap_cell(gaps.get(id(r)))] * bool(gaps), *[flags(r)] * bool(flagged))
    return table


def _results_caption(rows: list[dict], flagged: list[dict], gaps: dict) -> str:
    parts = [f"{word}: {why}" for column, word, why in FLAGS
             if any(r.get(column) for r in flagged)]
    if any(r["status"] == Status.OOM and r.get("peak_mem_mb") is not None for r in rows):
        parts.append("oom: [red]red[/] memory is the container's peak when the kernel killed "
                     "the job, headroom the limit less that peak")
    if gaps:
        parts.append("Δlogit: max |logit − the same model's eager fp32's| on the first batch, "
                     "same task, batch and sequence length" + _elsewhere_note(gaps.values()))
    return "; ".join(parts)


def _memory(row: dict, column: str):
    """A memory figure of a row. An oom job has none of its own: it had the container's peak at
    the kill (peak_mem_mb), and the limit less that as its headroom."""
    if row.get(column) is not None or row["status"] != Status.OOM:
        return row.get(column)
    peak, limit = row.get("peak_mem_mb"), row.get("memory_limit_mb")
    if column == "memory_mb":
        return peak
    if column == "headroom_mb" and None not in (peak, limit):
        return limit - peak
    return None


def _memory_cell(row: dict, column: str) -> str:
    """Memory, limit or headroom: red for an oom job's peak and for headroom of 0 or less."""
    value = _memory(row, column)
    text = _num(value, ".0f")
    killed = row["status"] == Status.OOM and column in ("memory_mb", "peak_mem_mb")
    short = column == "headroom_mb" and value is not None and value <= 0
    return f"[red]{text}[/]" if text and (killed or short) else text


def _logit_gaps(rows: list[dict], elsewhere: dict | None) -> dict:
    """id(row) -> its Compared, for the rows with a Δlogit against eager fp32."""
    from farm.comparisons import compare

    if not any(r.get("logits_json") for r in rows):  # no logits (before 0007): no Δlogit
        return {}
    return {id(c.result): c for c in compare(rows, elsewhere) if c.logit_gap is not None}


def _gap_cell(compared) -> str:
    """A Δlogit, with † where the fp32 it is against ran in another sweep."""
    return _far(_num(compared.logit_gap, ".1e"), compared.baseline_elsewhere) if compared else ""


def _elsewhere_note(compared, reference: bool = False) -> str:
    """'; †: compared with sweep s on d ...', naming the sweep and device of each baseline (and,
    with reference, each streamed variant's eager reference) that came from another sweep."""
    found = sorted({(other["sweep"], other["device"]) for c in compared
                    for other, far in ((c.baseline, c.baseline_elsewhere),
                                       (c.reference, reference and c.reference_elsewhere))
                    if far})
    if not found:
        return ""
    return ("; †: compared with " + ", ".join(f"sweep {shown(sweep)} on {shown(device)}"
                                             for sweep, device in found)
            + " (no run of that work here)")


def _work_columns(table: Table, rows: list[dict]) -> list[str]:
    """model, variant, (task, seq and device where they vary), batch, status: the columns that
    say which job a row is; returns the varying ones."""
    varying = [c for c in ("task", "seq_len", "device") if len({r[c] for r in rows}) > 1]
    for name in ("model", "variant", *varying, "batch_size", "status"):
        table.add_column(label(name), no_wrap=True)
    return varying


def _work_cells(r: dict, varying: list[str]) -> list[str]:
    style = STATUS_STYLE.get(r["status"], "")
    return [shown(r["model"]), shown(r["variant"]), *[shown(r[c]) for c in varying],
            str(r["batch_size"]), f"[{style}]{r['status']}[/]"]


def _compared_order(c) -> tuple:
    r = c.result
    return (r["model"], r["task"], r["seq_len"], r["batch_size"], r["device"] or "",
            not c.is_baseline, r["variant"])


def streaming_table(title: str, rows: list[dict], elsewhere: dict | None = None) -> Table:
    """The stream variants against eager fp32: time, model memory, reads, and whether their
    logits are those of the eager model of their own precision and methods. Baselines and
    references come from the rows, else from `elsewhere` (farm.comparisons.compare)."""
    from farm.comparisons import compare

    compared = compare(rows, elsewhere)
    streamed = [c for c in compared if c.variant.streamed]
    listed = [c for c in compared if c.variant.streamed or any(
        c.result is o.reference or c.result is o.baseline for o in streamed)]
    table = Table(title=title, header_style="bold", pad_edge=False,
                  caption="× eager: per-sample time / eager fp32's; model MiB: peak above the "
                          "agent idle; per pass: layer MB read, read ms (any thread), wait ms "
                          "(the pass stalled), compute ms; Δlogit: max |logit − the eager "
                          "model's of the same precision and methods| on the first batch"
                          + _elsewhere_note(streamed, reference=True))
    varying = _work_columns(table, [c.result for c in listed])
    for name in ("ms/sample", "× eager", "model MiB", "% eager", "MB/pass", "read ms",
                 "wait ms", "compute ms", "Δlogit"):
        table.add_column(name, justify="right")
    for row in sorted(listed, key=_compared_order):
        r = row.result
        mb = r.get("bytes_read")
        table.add_row(
            *_work_cells(r, varying), _num(r.get("per_sample_ms"), ".1f"),
            _far(_num(row.latency_ratio, ".2f"), row.baseline_elsewhere),
            _num(r.get("model_memory_mb"), ".0f"),
            _far(_num(row.memory_ratio and 100 * row.memory_ratio, ".0f"),
                 row.baseline_elsewhere),
            _num(mb and mb / 1e6, ".0f"), _num(r.get("read_ms"), ".1f"),
            _num(r.get("read_wait_ms"), ".1f"), _num(r.get("compute_ms"), ".1f"),
            _far(_num(row.stream_gap, ".1e"), row.reference_elsewhere))
    return table


def _far(text: str, elsewhere: bool) -> str:
    """A figure against a run of another sweep, marked †."""
    return text + "†" if text and elsewhere else text


def methods_table(title: str, rows: list[dict], elsewhere: dict | None = None) -> Table:
    """The variants with methods against eager fp32 on the same work (from the rows, else from
    `elsewhere`: farm.comparisons.compare): whether their savings in parameters and FLOPs
    became time and memory, what they did to the logits (and the score), and each method's own
    figures."""
    from agents.methods import table_fields
    from farm.comparisons import compare

    compared = compare(rows, elsewhere)
    with_methods = [c for c in compared if c.variant.methods]
    listed = [c for c in compared
              if c.variant.methods or any(c.result is o.baseline for o in with_methods)]
    fields = [f for f in table_fields() if any(c.result.get(f[0]) is not None for c in listed)]
    scored = any(c.result.get("metric") or c.result.get("score_note") for c in listed)
    table = Table(title=title, header_style="bold", pad_edge=False,
                  caption="; ".join(
                      ["× fp32 and (%): against the eager fp32 model on the same work; model "
                       "MiB: peak above the agent idle; Δlogit: max |logit − fp32's| on the "
                       "first batch" + _elsewhere_note(with_methods)]
                      + [f"{n.replace('_', ' ')}: {what}" for n, _, _, what in fields]))
    varying = _work_columns(table, [c.result for c in listed])
    # masks store zeros: their nonzero parameters, where a variant's are clearly fewer than it
    # stores (a model's own zero biases are a fraction of a percent)
    masked = any(c.result["nonzero_params"] < 0.95 * (c.result.get("params") or 0)
                 for c in listed if c.result.get("nonzero_params") is not None)
    # A number is never wrapped or cut (either reads as another number): a figure with its
    # share may wrap at the space between them; what the methods did is one text column, a
    # figure a line, however many methods there are.
    for name in ("score",) * scored + ("ms/sample", "× fp32", "params M") + (
            "nonzero M",) * masked + ("GFLOP/sample", "model MiB", "Δlogit"):
        shares = name in ("params M", "GFLOP/sample", "model MiB")
        table.add_column(name, justify="right", no_wrap=not shares,
                         min_width=7 if shares else None)
    if fields:
        table.add_column("what the methods did", min_width=16)
    for c in sorted(listed, key=_compared_order):
        r = c.result
        score = [_num(r.get("score"), ".3f") or ("[dim]no score[/]" if r.get("score_note")
                                                 else "–")] if scored else []
        did = "\n".join(name.replace("_", " ") + " " + _num(r[name], FIELD_FORMATS[kind])
                        for name, kind, *_ in fields if r.get(name) is not None)
        table.add_row(
            *_work_cells(r, varying), *score, _num(r.get("per_sample_ms"), ".1f"),
            _far(_num(c.latency_ratio, ".2f"), c.baseline_elsewhere),
            _with_share(r.get("params") and r["params"] / 1e6, c.params_ratio, ".2f"),
            *[_num(r.get("nonzero_params") and r["nonzero_params"] / 1e6, ".2f")] * masked,
            _with_share(r.get("flops") and r["flops"] / 1e9, c.flops_ratio, ".2f"),
            _with_share(r.get("model_memory_mb"), c.memory_ratio, ".0f"),
            _far(_num(c.logit_gap, ".1e"), c.baseline_elsewhere), *[shown(did)] * bool(fields))
    return table


FIELD_FORMATS = {"float": ".4f", "int": "", "text": ""}  # a method's figure by its FIELDS type


def _with_share(value, ratio, fmt: str) -> str:
    """'95.31 (87%)': a figure and its share of the baseline's."""
    text = _num(value, fmt)
    return f"{text} ({100 * ratio:.0f}%)" if text and ratio is not None else text


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


class FitProgress:
    """One bar per phase of `farm exits fit` (reading the train set, the dev set, training)."""

    def __init__(self, console: Console):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), console=console)
        self.phases: dict[str, int] = {}

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def update(self, phase: str, done: int, total: int) -> None:
        if phase not in self.phases:
            self.phases[phase] = self.progress.add_task(phase, total=total)
        self.progress.update(self.phases[phase], completed=done)


VERDICT_STYLE = {"faster": "green", "slower": "red", "~": "dim", "n/a": "dim"}


def differences_table(title: str, differences: list, by: str) -> Table:
    """`farm compare`: each result against its baseline, green where it is significantly
    faster, red where slower, dim where the two cannot be told apart (~)."""
    change = differences[0].min_change if differences else 0.02
    caption = ("median ms: of the calls, or of the repeats' medians; × baseline: the ratio of "
               "medians, with its 95% bootstrap interval; p: Mann-Whitney U; from: between N "
               "and M repeats (each repeat's median, each a fresh agent process), or the calls "
               "of one process each; ~: no significant difference (p ≥ 0.05, or the interval "
               f"holds 1) or a change within ±{100 * change:g}%; Δ score: paired bootstrap "
               "over the examples both scored")
    few = next((d.repeats for d in differences if not d.decidable), None)
    if few:
        caption += (f"; {few[0]} and {few[1]} repeats are too few for p < 0.05 at all (use "
                    "repeats: 5 or more)")
    if any(not d.between_repeats for d in differences):
        caption += ("; judged on calls, the spread between agent processes is unseen (give "
                    "the sweep repeats: 5 to see it)")
    table = Table(title=title, header_style="bold", pad_edge=False, caption=caption)
    rows = [d.other for d in differences]
    varying = [c for c in ("task", "seq_len") if len({r[c] for r in rows}) > 1]
    for name in ("model", *varying, "batch_size"):
        table.add_column(label(name), no_wrap=True)
    table.add_column("baseline", no_wrap=True)
    table.add_column(by if by != "sweep" else "against", no_wrap=True)
    for name in ("median ms", "× baseline", "95% interval", "p", "from", "verdict", "Δ MiB",
                 "Δ score"):
        table.add_column(name, justify="right")
    for d in differences:
        style = VERDICT_STYLE[d.verdict]
        interval = f"[{d.low:.3f}, {d.high:.3f}]" if d.low is not None else ""
        score = ""
        if d.score_diff is not None:
            score = f"{d.score_diff:+.3f}"
            if d.score_low is not None:
                score += f" [{d.score_low:+.3f}, {d.score_high:+.3f}]"
        table.add_row(
            shown(d.other["model"]), *[shown(d.other[c]) for c in varying],
            str(d.other["batch_size"]), shown(_side(d.baseline, by)), shown(_side(d.other, by)),
            f"{_num(d.medians[0], '.2f')} → {_num(d.medians[1], '.2f')}",
            f"[{style}]{_num(d.ratio, '.3f')}[/]", interval, _num(d.p_value, ".2g"),
            _evidence(d), f"[{style}]{d.verdict}[/]", _whole_mib(d.memory_diff_mb), score)
    return table


def _whole_mib(change: float | None) -> str:
    """+12, -3, +0 (never "-0" for a fraction of a MiB)."""
    return _num(None if change is None else round(change), "+d")


def _evidence(d) -> str:
    """What a comparison was judged on: 'between 5 and 5 repeats', or '312 / 298 calls'."""
    if d.between_repeats:
        return f"between {d.repeats[0]} and {d.repeats[1]} repeats"
    return f"{d.calls[0]} / {d.calls[1]} calls"


def _side(row: dict, by: str) -> str:
    return str(row["sweep"] if by == "sweep" else row[by])


def difference_records(differences: list, by: str) -> list[dict]:
    """`farm compare --csv/--json`: one flat record per comparison (its jobs: the first
    repeat's, where there are several)."""
    return [{"model": d.other["model"], "task": d.other["task"],
             "batch_size": d.other["batch_size"], "seq_len": d.other["seq_len"],
             "by": by, "baseline": _side(d.baseline, by), "other": _side(d.other, by),
             "baseline_job": d.baseline["job_key"], "other_job": d.other["job_key"],
             "baseline_calls": d.calls[0], "other_calls": d.calls[1],
             "baseline_p50_ms": d.baseline.get("p50_ms"), "other_p50_ms": d.other.get("p50_ms"),
             "ratio": d.ratio, "ratio_low": d.low, "ratio_high": d.high, "p_value": d.p_value,
             "verdict": d.verdict, "peak_mem_diff_mb": d.memory_diff_mb,
             "score_diff": d.score_diff, "score_low": d.score_low, "score_high": d.score_high,
             "baseline_repeats": d.repeats[0], "other_repeats": d.repeats[1],
             "between": "repeats" if d.between_repeats else "calls",
             "baseline_median_ms": d.medians[0], "other_median_ms": d.medians[1],
             "min_change": d.min_change}
            for d in differences]
