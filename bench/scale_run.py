"""How much of a sweep is the controller's own time, and how long before its first result?

`controller`: sweeps of bert-tiny jobs that each do almost nothing (warmup 0, one timed call),
through farm.api.submit onto 8 `kind: local` devices of one thread each, which share this
host's cores. Each job's outcome carries the runner's own started_at and finished_at (its
agent's load and the job itself): a device's busy time is their sum. What is left of the run's
wall time is the controller's and Ray's: choosing, dispatching, collecting and storing.

    gap per device  = (its last result - its first result) - busy(its jobs after the first)
                      (the first job starts the device's agent and imports torch: the start,
                      not the controller; a device left idle at the end because the queue is
                      empty is not waiting for the controller either)
    controller/job  = mean over devices of gap / jobs in the sweep
    turns/job       = the controller's time in its own turns (farm.api.SubmitReport's
                      controller_s: storing outcomes, choosing and dispatching) / jobs

The gap holds more than the controller's work: Ray's hand-over of each job and its outcome, and
the time a device's outcome waits while the controller stores another device's (more of them
the more often outcomes come); the turns are the controller's work alone.

Every size runs jobs of the same shapes on average (batch sizes evenly spread over 1-50,
sequence lengths over 8-107): a bigger sweep of bigger jobs would load the shared cores more
and count that as the controller's.

The goal: under 20 ms per job, and within 1.5x from the smallest sweep to the largest.

`first_result`: a 40-job sweep from the call of submit to its first stored result, phase by
phase (validation and expansion, the database, Ray's start, the devices' workers and agents,
the first job's start and its result), each phase's start and end in seconds from submit. Then
the same sweep as a user runs it, `farm submit` in a process of its own, from the command's
start: Python's start and farm's imports too.
"""
from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import farm.api as api  # noqa: E402
from bench.common import FARM  # noqa: E402
from farm.controller import Observer  # noqa: E402

GOAL_MS, GOAL_RATIO = 20.0, 1.5
QUICK = {"warmup": 0, "min_iters": 1, "min_seconds": 0}


class Clock(Observer):
    """Observes a sweep: when it started, each outcome, the first job's start and result."""

    def __init__(self, t0: float):
        self.t0, self.marks, self.outcomes = t0, {}, []

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, time.time())

    def devices_ready(self, facts):
        self.mark("devices ready")

    def sweep_started(self, name, to_run, total):
        self.mark("sweep started")

    def job_started(self, job, device):
        self.mark("first job started")

    def job_finished(self, job, outcome):
        self.mark("first result stored")
        self.outcomes.append(outcome)


def spread(low: int, high: int, count: int) -> list[int]:
    """`count` distinct integers evenly spread from low to high."""
    if count <= 1:
        return [low]
    return sorted({round(low + i * (high - low) / (count - 1)) for i in range(count)})


def write_files(folder: Path, devices: int, jobs: int) -> tuple[Path, Path]:
    """An inventory of `devices` one-thread local devices tagged `pool`, and a bert-tiny sweep of
    `jobs` jobs in one (model, variant) group (batch sizes x sequence lengths)."""
    tag = uuid.uuid4().hex[:6]
    (folder / "inventory.yaml").write_text(yaml.safe_dump({"devices": [
        {"name": f"scale-{tag}-{i}", "kind": "local", "cpus": 1, "tags": ["pool"]}
        for i in range(devices)]}))
    batches, seqs = spread(1, 50, min(jobs, 50)), spread(8, 107, -(-jobs // min(jobs, 50)))
    sweep = folder / f"scale-{jobs}.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": f"scale-{jobs}-{tag}", "devices": ["pool"], "models": ["bert-tiny"],
        "batch_sizes": batches, "seq_lens": seqs, "retries": 0, "measure": QUICK}))
    return sweep, folder / "inventory.yaml"


def run_sweep(folder: Path, devices: int, jobs: int) -> dict:
    """One sweep of about `jobs` jobs; its wall, busy time per device and controller time."""
    sweep, inventory = write_files(folder, devices, jobs)
    clock = Clock(time.time())
    report = api.submit(sweep, inventory, db=str(folder / "farm.db"), observer=clock)
    end = max(o["finished_at"] for o in clock.outcomes)
    wall = end - clock.marks["sweep started"]
    by_device: dict[str, list[dict]] = {}
    for o in clock.outcomes:
        by_device.setdefault(o["device"], []).append(o)
    busy, gaps, dispatches = {}, [], 0
    for device, outcomes in by_device.items():
        outcomes.sort(key=lambda o: o["finished_at"])
        first, later = outcomes[0], outcomes[1:]
        busy[device] = sum(o["finished_at"] - o["started_at"] for o in outcomes)
        gaps.append(outcomes[-1]["finished_at"] - first["finished_at"]
                    - sum(o["finished_at"] - o["started_at"] for o in later))
        dispatches += len(later)
    return {"jobs": report.total_jobs, "done": report.counts.get("done", 0), "wall": wall,
            "busy_min": min(busy.values()), "busy_max": max(busy.values()),
            "per_job_ms": 1000 * statistics.mean(gaps) / report.total_jobs,
            "gap_per_dispatch_ms": 1000 * sum(gaps) / dispatches,
            "turns_ms": 1000 * report.controller_s / report.total_jobs}


def controller(sizes=(100, 1000, 5000), devices: int = 8) -> list[dict]:
    """The controller's time per job at each sweep size (one sweep each: they are long)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="farm-scale-") as tmp:
        for size in sizes:
            rows.append(run_sweep(Path(tmp), devices, size))
    table = Table(title=f"controller time per job, {devices} local devices of 1 thread "
                        "(per job = mean over devices of (its last result - its first - busy between) / jobs)")
    for column in ("jobs", "done", "wall s", "busy s (min-max)", "controller ms/job",
                   "gap ms/dispatch", "turns ms/job"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(str(r["jobs"]), str(r["done"]), f"{r['wall']:.1f}",
                      f"{r['busy_min']:.1f}-{r['busy_max']:.1f}", f"{r['per_job_ms']:.1f}",
                      f"{r['gap_per_dispatch_ms']:.1f}", f"{r['turns_ms']:.1f}")
    console = Console()
    console.print(table)
    if len(rows) > 1:
        ratio = rows[-1]["per_job_ms"] / rows[0]["per_job_ms"]
        turns = rows[-1]["turns_ms"] / rows[0]["turns_ms"]
        console.print(f"ratio {rows[-1]['jobs']} : {rows[0]['jobs']} jobs = {ratio:.2f}, of the "
                      f"turns alone {turns:.2f} (goal: within {GOAL_RATIO}x, and under "
                      f"{GOAL_MS:.0f} ms per job)")
    return rows


@contextlib.contextmanager
def timed(spans: dict, names: dict[str, str]):
    """farm's own steps ("module.attribute" -> phase), each's first start and last end noted.
    farm.api looks Ray's steps up in farm.cluster when it runs them, so they are wrapped there."""
    import importlib

    steps = {name: (importlib.import_module(module), attr)
             for name, (module, attr) in ((n, n.rsplit(".", 1)) for n in names)}
    saved = {name: getattr(module, attr) for name, (module, attr) in steps.items()}

    def wrap(attr, phase, fn):
        def call(*args, **kwargs):
            start = time.time()
            spans.setdefault(phase, [start, None])
            try:
                return fn(*args, **kwargs)
            finally:
                spans[phase][1] = time.time()

        @contextlib.contextmanager
        def context(*args, **kwargs):
            start = time.time()
            spans.setdefault(phase, [start, None])
            with fn(*args, **kwargs):
                spans[phase][1] = time.time()
                yield
        return context if attr == "ray_connection" else call

    for name, phase in names.items():
        module, attr = steps[name]
        setattr(module, attr, wrap(attr, phase, saved[name]))
    try:
        yield
    finally:
        for name, fn in saved.items():
            module, attr = steps[name]
            setattr(module, attr, fn)


PHASES = {"farm.api.resolve_targets": "validate", "farm.api.expand": "expand",
          "farm.api.Store": "open database", "farm.api.ray_connection": "Ray start",
          "farm.cluster.start_workers": "device workers",
          "farm.cluster.prepare_workers": "prepare devices"}
POLL_S = 0.02


def from_the_command_line(folder: Path, devices: int, jobs: int) -> tuple[float, float]:
    """`farm submit` as a user runs it (Python's start and farm's imports included): seconds
    from its start to its first stored result (the database read every POLL_S), and to its
    end."""
    import sqlite3
    import subprocess

    sweep, inventory = write_files(folder, devices, jobs)
    db = folder / f"{yaml.safe_load(sweep.read_text())['name']}.db"  # a new one each run
    t0 = time.time()
    run = subprocess.Popen([FARM, "submit", str(sweep), "-i", str(inventory), "--db", str(db)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = None
    while run.poll() is None and first is None:
        time.sleep(POLL_S)
        with contextlib.suppress(sqlite3.Error):
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
                if con.execute("SELECT count(*) FROM results").fetchone()[0]:
                    first = time.time() - t0
    stderr = run.communicate()[1]
    if run.returncode != 0 or first is None:
        raise SystemExit(f"farm submit failed ({run.returncode}): {stderr.decode()[-2000:]}")
    return first, time.time() - t0


def first_result(jobs: int = 40, devices: int = 4, rounds: int = 3) -> dict:
    """Phases of a small sweep from submit to its first result (medians of `rounds`)."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="farm-first-") as tmp:
        for _ in range(rounds):
            sweep, inventory = write_files(Path(tmp), devices, jobs)
            spans: dict = {}
            t0 = time.time()
            clock = Clock(t0)
            with timed(spans, PHASES):
                api.submit(sweep, inventory, db=str(Path(tmp) / "farm.db"), observer=clock)
            done = time.time()
            spans["store sweep"] = [spans["prepare devices"][1], clock.marks["sweep started"]]
            for mark in ("first job started", "first result stored"):
                spans[mark] = [t0, clock.marks[mark]]
            spans["whole sweep"] = [t0, done]
            first, whole = from_the_command_line(Path(tmp), devices, jobs)
            runs.append({**{p: (a - t0, b - t0) for p, (a, b) in spans.items()},
                         "farm submit: first result": (0.0, first),
                         "farm submit: whole sweep": (0.0, whole)})
    phases = list(runs[0])
    table = Table(title=f"time to the first result: {jobs} bert-tiny jobs on {devices} local "
                        f"devices (seconds from the call of farm.api.submit; `farm submit`'s from "
                        f"the command's start; medians of {rounds})")
    for column in ("phase", "from", "to", "took"):
        table.add_column(column, justify="right" if column != "phase" else "left")
    medians = {}
    for phase in phases:
        start = statistics.median(r[phase][0] for r in runs)
        end = statistics.median(r[phase][1] for r in runs)
        medians[phase] = (start, end)
        table.add_row(phase, f"{start:.2f}", f"{end:.2f}", f"{end - start:.2f}")
    Console().print(table)
    return medians


def main() -> None:
    import argparse
    import inspect

    from bench.common import Paragraphs

    parser = argparse.ArgumentParser(description=inspect.cleandoc(__doc__),
                                     formatter_class=Paragraphs)
    parser.add_argument("part", choices=("controller", "first-result", "both"), nargs="?",
                        default="both")
    parser.add_argument("--sizes", default="100,1000,5000",
                        help="sweep sizes for the controller part, comma-separated")
    parser.add_argument("--devices", type=int, default=8, help="local devices to run them on")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the first-result part")
    args = parser.parse_args()
    if args.part in ("controller", "both"):
        controller(tuple(int(s) for s in args.sizes.split(",")), args.devices)
    if args.part in ("first-result", "both"):
        first_result(rounds=args.rounds)


if __name__ == "__main__":
    main()
