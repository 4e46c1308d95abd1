"""`farm status`: one snapshot (farm.readers.status_snapshot) drawn at the terminal's width: the
sweeps with their progress and pace, the devices (a line per pool and state when there are
many), the latest results and the latest failures. Figures and device names are never cut:
where the width is short, the columns that matter least are left out (farm.fit)."""
from __future__ import annotations

import re
from collections import Counter

from rich.text import Text

from farm.console import (DEVICE_STATE_STYLE, STATUS_STYLE, _age, _num, _temperature, _when,
                          visible)
from farm.fit import KEEP, Bar, Clip, Column, fitted
from farm.results import Status, label

MANY_DEVICES = 16  # more than this: a line per pool and state rather than one per device
SWEEP_STATE_STYLE = {"running": "cyan", "incomplete": "magenta", "finished": "green"}
_NAMES_SHOWN = 12  # of a group's compacted names; the rest are counted
_DOING_SHOWN = 3  # lines of a group's jobs or errors


class StatusView:
    """Rich renders this at the console's width, again at each refresh of a live view."""

    def __init__(self, snapshot: dict):
        self.snapshot = snapshot

    def __rich_console__(self, console, options):
        width, now, snapshot = options.max_width, _when(self.snapshot["now"]), self.snapshot
        yield sweeps_table(snapshot["sweeps"], now, width)
        devices = snapshot["devices"]
        yield (device_groups_table(devices, width) if len(devices) > MANY_DEVICES
               else devices_status_table(devices, now, width))
        yield latest_table(snapshot["latest"], now, width)
        if snapshot["failures"]:
            yield failures_table(snapshot["failures"], width)


def _empty(title: str, note: str) -> Text:
    return Text.assemble((title, "italic"), ": ", (note, "dim"))


def _plain(value, style: str = "") -> Text:
    """A database's text as itself: never markup, its control characters written out."""
    return Text(visible(value, lines=False), style)


def _job(r: dict) -> Clip:
    """'bert-base int8 synthetic b1 s128' on one line: the model's name may be cut, never the
    batch size and sequence length."""
    return Clip(_plain(f"{r['model']} {r['variant']} {r['task']}"),
                _plain(f" b{r['batch_size']} s{r['seq_len']}"))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "<1 min"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours < 24 else f"{hours // 24} d {hours % 24} h"


def sweeps_table(sweeps: list[dict], now, width: int):
    if not sweeps:
        return _empty("sweeps", "no sweep in the last day")
    finished = [sum(s[k] or 0 for k in ("done", "oom", "failed")) for s in sweeps]
    running = [s["state"] == "running" for s in sweeps]

    def count(key: str, style: str, always: bool = False) -> list:
        return [f"[{style}]{s[key] or 0} {key}[/]" if s[key] or always else "" for s in sweeps]
    return fitted("sweeps", [
        Column("sweep", [Clip(_plain(s["name"], "bold")) for s in sweeps], KEEP, shrink=12,
               cut=60),
        Column("state", [f"[{SWEEP_STATE_STYLE[s['state']]}]{s['state']}[/]" for s in sweeps],
               KEEP),
        Column("progress", [Bar(n, s["total"] or 0) for n, s in zip(finished, sweeps)], 20,
               shrink=8),
        Column("jobs", [f"{n}/{s['total'] or 0}" for n, s in zip(finished, sweeps)], KEEP,
               justify="right"),
        Column("", count("done", "green", always=True), 85, justify="right"),
        Column("", count("oom", "yellow"), 80, justify="right"),
        Column("", count("failed", "red"), 82, justify="right"),
        Column("", count("cancelled", "magenta"), 50, justify="right"),
        Column("jobs/min", [_rate(s, live) for s, live in zip(sweeps, running)], 70,
               justify="right"),
        Column("ETA", [_duration(s["eta_s"]) or ("—" if live else "")
                       for s, live in zip(sweeps, running)], 75),
        Column("last", [_age(s["last_finished"], now) for s in sweeps], 30),
    ], width)


def _rate(sweep: dict, running: bool) -> str:
    """Its newest run's jobs per minute; '—' while a running one has too few finishes."""
    if sweep["rate_per_min"] is None:
        return "—" if running else ""
    return f"{sweep['rate_per_min']:.1f}"


def devices_status_table(devices: list[dict], now, width: int):
    if not devices:
        return _empty("devices", "no device yet")
    busy = [d["state"] == "busy" and d["model"] for d in devices]
    several_pools = len({d["pool"] for d in devices}) > 1
    return fitted("devices", [
        Column("device", [_plain(d["name"], "bold") for d in devices], KEEP),
        Column("pool", [_plain(d["pool"]) if several_pools else "" for d in devices], 25),
        Column("kind", [_plain(d["kind"]) for d in devices], 30),
        Column("state", [_plain(d["state"], DEVICE_STATE_STYLE.get(d["state"], ""))
                         for d in devices], KEEP),
        Column("current job", [_job(d) if b else "" for d, b in zip(devices, busy)], KEEP,
               shrink=16, cut=55),
        Column("phase", [_plain(d["phase"], "cyan") if b else "" for d, b in zip(devices, busy)],
               50),
        Column("seen", [_age(d["last_seen"], now) for d in devices], 60),
        Column("board W", [_num(d["power_mw"] and d["power_mw"] / 1000, ".2f")
                           for d in devices], 40, justify="right"),
        Column("board RAM", [f"{d['board_ram_mb']:.0f} MiB" if d["board_ram_mb"] else ""
                             for d in devices], 42, justify="right"),
        Column("temp", [_temperature(d) for d in devices], 45),
        Column("last error", [_plain(d["last_error"], "red") for d in devices], 65, shrink=16,
               lines=2),
    ], width)


_STATE_RANK = {"busy": 0, "idle": 1}  # then the rest, by name


def device_groups_table(devices: list[dict], width: int):
    """A line per pool and state: how many devices, which (compacted: emu-[01-16]), and what
    they do (the jobs of the busy ones) or last said (the errors of the others)."""
    groups: dict[tuple, list[dict]] = {}
    for d in devices:
        groups.setdefault((d["pool"], d["state"]), []).append(d)
    keys = sorted(groups, key=lambda k: (k[0], _STATE_RANK.get(k[1], len(_STATE_RANK)), k[1]))
    names = [_plain(compact_names([d["name"] for d in groups[k]])) for k in keys]
    widest = max(len(word) for n in names for word in n.plain.split())  # never cut a name
    return fitted(f"devices ({len(devices)}, by pool and state)", [
        Column("pool", [_plain(pool, "bold") for pool, _ in keys], KEEP),
        Column("state", [_plain(state, DEVICE_STATE_STYLE.get(state, "")) for _, state in keys],
               KEEP),
        Column("n", [str(len(groups[k])) for k in keys], KEEP, justify="right"),
        Column("devices", names, 80, shrink=max(16, widest), lines=_NAMES_SHOWN),
        Column("what", [_doing(groups[k]) for k in keys], 60, shrink=16, lines=_DOING_SHOWN),
    ], width)


def _doing(devices: list[dict]) -> Text:
    """The jobs a group runs, or the errors it last reported, each once with how many (the
    most frequent, then how many others)."""
    seen = Counter(_job(d).at(10**6).plain if d["state"] == "busy" and d["model"]
                   else visible(d["last_error"], lines=False) for d in devices
                   if (d["state"] == "busy" and d["model"]) or d["last_error"])
    lines = [f"{what} ×{n}" if n > 1 else what for what, n in seen.most_common()]
    if len(lines) > _DOING_SHOWN:
        lines[_DOING_SHOWN - 1:] = [f"+{len(lines) - _DOING_SHOWN + 1} more"]
    return Text("\n".join(lines), "" if devices[0]["state"] == "busy" else "red")


def compact_names(names: list[str]) -> str:
    """'emu-01 emu-02 emu-03 emu-05 gpu' -> 'emu-[01-03,05] gpu': names that differ only in a
    final number, as ranges; at most _NAMES_SHOWN entries, then how many more."""
    numbered: dict[tuple, list[str]] = {}  # (prefix, numbered) -> numbers
    for name in names:
        match = re.fullmatch(r"(.*?)(\d+)", name)
        key = (match[1], True) if match else (name, False)
        numbered.setdefault(key, []).append(match[2] if match else "")
    entries = [_ranges(prefix, numbers) if is_numbered else prefix
               for (prefix, is_numbered), numbers in numbered.items()]
    more = len(entries) - _NAMES_SHOWN
    return " ".join(entries[:_NAMES_SHOWN]) + (f" +{more} more" if more > 0 else "")


def _ranges(prefix: str, numbers: list[str]) -> str:
    """'emu-', ['01', '02', '03', '05'] -> 'emu-[01-03,05]' (a range keeps one width: 09 and
    10 join, 09 and 010 do not)."""
    if len(numbers) == 1:
        return prefix + numbers[0]
    runs: list[list[str]] = []
    for n in sorted(numbers, key=lambda n: (int(n), len(n))):
        last = runs[-1][-1] if runs else None
        if last is not None and int(n) == int(last) + 1 and (
                len(n) == len(last) or not n.startswith("0") and not last.startswith("0")):
            runs[-1].append(n)
        else:
            runs.append([n])
    return prefix + "[" + ",".join(r[0] if len(r) == 1 else f"{r[0]}-{r[-1]}"
                                   for r in runs) + "]"


def _one_sweep(rows: list[dict], title: str) -> tuple[str | Text, bool]:
    """A table's title, naming the sweep where all its rows are of one (then no sweep column)."""
    sweeps = {r["sweep"] for r in rows}
    if len(sweeps) == 1:
        return Text(f"{title} of ") + _plain(next(iter(sweeps))), True
    return title, False


def latest_table(rows: list[dict], now, width: int):
    """The newest results: done, and oom (a model that does not fit is a finding, shown with
    the peak it reached and why it ended, never among the failed jobs)."""
    if not rows:
        return _empty("latest results", "no result yet")
    title, one = _one_sweep(rows, "latest results")
    figures = (("p50_ms", ".2f", 30), ("per_sample_ms", ".2f", 95), ("peak_mem_mb", ".0f", 90),
               ("energy_mj", ".2f", 20))
    return fitted(title, [
        Column("sweep", [_plain(r["sweep"]) if not one else "" for r in rows], 65, shrink=8),
        Column("device", [_plain(r["device"]) for r in rows], 80),
        Column("job", [_job(r) for r in rows], KEEP, shrink=16, cut=45),
        Column("status", [_plain(r["status"], STATUS_STYLE.get(r["status"], "")) for r in rows],
               KEEP),
        *(Column(label(name), [_num(r[name], fmt) for r in rows], keep, justify="right")
          for name, fmt, keep in figures),
        Column("when", [_age(r["finished_at"], now) for r in rows], 40),
        Column("why it ended", [_plain(r["error"]) if r["status"] == Status.OOM else ""
                                for r in rows], 60, shrink=16, lines=2),
    ], width)


def failures_table(rows: list[dict], width: int):
    title, one = _one_sweep(rows, "failed jobs")
    return fitted(title, [
        Column("sweep", [_plain(r["sweep"]) if not one else "" for r in rows], 65, shrink=8),
        Column("device", [_plain(r["device"]) for r in rows], 80),
        Column("job", [_job(r) for r in rows], KEEP, shrink=16, cut=45),
        Column("status", [_plain(r["status"], STATUS_STYLE.get(r["status"], "red"))
                          for r in rows], KEEP),
        Column("class", [_plain(r["failure"]) for r in rows], 40),
        Column("reason", [_plain(r["error"]) for r in rows], 90, shrink=16, lines=4),
    ], width)
