"""`farm submit --dry-run`: what a submit would run, read without writing anything.

    dry_run(sweep_file, inventory_file, db) -> Plan

The sweep and inventory are validated and expanded exactly as a submit does (every refusal a
submit would give, the name another file holds included), the database is only read (and not
created where there is none), and nothing starts: no Ray, no container, no agent. The estimate
is of measured figures only: the median agent time (`job_s`) of earlier results of the same job
(the same key, in any sweep) and the median load time of its model and variant; jobs that never
ran are counted, never guessed.
"""
from __future__ import annotations

import contextlib
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from farm.devices import group_key
from farm.inventory import load_inventory
from farm.store import resolve_url, url_shown
from farm.store.readonly import ReadOnly, database_exists
from farm.store.sweeps import refuse_other_file
from farm.sweep import JobSpec, expand, load_sweep, read_data, resolve_targets

@dataclass(frozen=True)
class TargetPlan:
    target: str               # the device name or tag the sweep names ("*": the whole inventory)
    devices: tuple[str, ...]  # the devices its jobs may run on
    jobs: int
    finished: int             # already finished in this sweep: a submit leaves them
    groups: int               # model loads (model, variant, repeat) among the jobs to run
    estimated: int            # jobs to run with an earlier result of the same job
    estimate_s: float | None  # their agent time and loads, spread over the devices

    @property
    def to_run(self) -> int:
        return self.jobs - self.finished


@dataclass(frozen=True)
class Plan:
    sweep: str
    db: str
    targets: tuple[TargetPlan, ...]
    groups: tuple[str, ...]   # the model groups to run, as "model variant" (repeat r)

    @property
    def jobs(self) -> int:
        return sum(t.jobs for t in self.targets)

    @property
    def to_run(self) -> int:
        return sum(t.to_run for t in self.targets)


def dry_run(sweep_file: str | Path, inventory_file: str | Path, db: str | None = None) -> Plan:
    inventory = load_inventory(inventory_file)
    sweep = load_sweep(sweep_file)
    pools = resolve_targets(sweep, inventory, str(sweep_file), str(inventory_file))
    jobs = expand(sweep, list(pools), read_data(sweep))
    finished, earlier, loads = set(), {}, {}
    if database_exists(db):
        with contextlib.closing(ReadOnly(db)) as reader:
            with reader.connection() as connection:
                refuse_other_file(Session(bind=connection), sweep.name,
                                  str(Path(sweep_file).resolve()), str(sweep_file))
            finished = {r["job_key"] for r in reader.rows(
                "SELECT j.key AS job_key FROM jobs j JOIN sweeps s ON s.id = j.sweep_id "
                "WHERE s.name = :name AND j.status IN ('done', 'oom', 'failed', 'timeout')",
                {"name": sweep.name})}
            earlier, loads = _earlier_times(reader, [j for j in jobs if j.key not in finished])
    targets = tuple(_target_plan(target, pools[target], [j for j in jobs if j.target == target],
                                 finished, earlier, loads) for target in pools)
    groups = dict.fromkeys(_group_name(j) for j in jobs if j.key not in finished)
    return Plan(sweep.name, url_shown(resolve_url(db)), targets, tuple(groups))


def _earlier_times(reader: ReadOnly, jobs: list[JobSpec]) -> tuple[dict, dict]:
    """Median agent seconds per job key, and median load seconds per model group, from every
    earlier done result of these jobs (any sweep: a key is what the job measures)."""
    keys = {j.key: j for j in jobs}
    times: dict[str, list[float]] = {}
    load_times: dict[str, list[float]] = {}
    for chunk in _chunks(sorted(keys), 500):
        names = {f"k{i}": key for i, key in enumerate(chunk)}
        for r in reader.rows(
                "SELECT job_key, job_s, load_s FROM v_results WHERE status = 'done' AND "
                f"job_s IS NOT NULL AND job_key IN ({', '.join(':' + n for n in names)})", names):
            times.setdefault(r["job_key"], []).append(r["job_s"])
            if r["load_s"] is not None:
                load_times.setdefault(group_key(keys[r["job_key"]].runner_spec()),
                                      []).append(r["load_s"])
    return ({k: statistics.median(v) for k, v in times.items()},
            {g: statistics.median(v) for g, v in load_times.items()})


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _target_plan(target: str, devices: list[str], jobs: list[JobSpec], finished: set,
                 earlier: dict, loads: dict) -> TargetPlan:
    left = [j for j in jobs if j.key not in finished]
    groups = {j.key: group_key(j.runner_spec()) for j in left}
    known = [j for j in left if j.key in earlier]
    estimate = None
    if known:
        # A group loads once per device it runs on: at least once, at most on every device.
        jobs_per_group = Counter(groups[j.key] for j in known)
        busy = sum(earlier[j.key] for j in known) + sum(
            loads.get(g, 0.0) * min(len(devices), n) for g, n in jobs_per_group.items())
        estimate = busy / len(devices)
    return TargetPlan(target, tuple(devices), len(jobs), len(jobs) - len(left),
                      len(set(groups.values())), len(known), estimate)


def _group_name(job: JobSpec) -> str:
    return f"{job.model.name} {job.variant.name}" + (
        f" (repeat {job.repeat})" if job.repeat > 1 else "")


def to_rich(plan: Plan):
    """The plan as a person reads it: a row per target, then the model groups."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"sweep {plan.sweep}: dry run (nothing written, nothing started)",
                  header_style="bold", pad_edge=False,
                  caption=f"finished: already in {plan.db} (a submit leaves them); estimate: "
                          "the median agent and load time of earlier results of the same jobs, "
                          "spread over the devices (jobs that never ran are not guessed)")
    for name in ("target", "devices", "jobs", "finished", "to run", "model loads", "estimate"):
        table.add_column(name, justify="left" if name in ("target", "devices") else "right")
    for t in plan.targets:
        if t.estimate_s is None:
            estimate = "[dim]no earlier results[/]" if t.to_run else ""
        else:
            estimate = _duration(t.estimate_s) + (
                f" [dim](for {t.estimated} of {t.to_run})[/]" if t.estimated < t.to_run else "")
        table.add_row(Text(t.target), Text(", ".join(t.devices)), str(t.jobs), str(t.finished),
                      str(t.to_run), str(t.groups), estimate)
    groups = Text("model groups to run: " + (", ".join(plan.groups) or "none"))
    return Group(table, groups)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
