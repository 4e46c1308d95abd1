"""Do farm's readers keep up with a lab's database? Fills a database with 100,000 results through
the store's own API (farm.store.Store: add_sweep of expanded sweeps, then job_started and
job_finished for every job, as a controller writes them), then times each reader as a user runs
it: `farm status --once`, `farm table`, `farm report`, `farm compare`, `farm export` and `farm
sql` as subprocesses (Python's start-up and imports included: what a user waits for), and the
API call behind each in this process (the work alone). Medians of rounds; the target is 2 s.

The database is a lab's: one big grid, scale-grid (every catalog model, 12 variants, batch sizes
1 to 32, sequence lengths 64 to 512, two pools of devices, as many repeats as make a fifth of
the results: 6 and 20,736 jobs at 100,000), the heavy case for table, report, compare and
export; and sweeps of 6 variants and 3 repeats (5,184 jobs) for the rest, of which scale-01 is
read too. Results hold what an agent reports: 20 to 50 raw latencies, the first batch's logits,
memory, clocks and the environment; bert-large's biggest batches end oom on the 2 GiB pool, and
one job in 200 fails.

.venv/bin/python bench/scale.py fill --db /tmp/lab.db   # fill once (and say how long it took)

.venv/bin/python bench/scale.py readers --db /tmp/lab.db --rounds 3   # time the readers

With --alone, each sweep's readers are timed on a database of that sweep alone too, in turn
with the others: what the other 95,000 results cost a reader, against what its sweep does.

The controller's side is bench/scale_run.py's, run from here too:

.venv/bin/python bench/scale.py controller --sizes 100,1000,5000   # controller time per job

.venv/bin/python bench/scale.py first-result   # a small sweep's phases to its first result

Without --db, readers fills a fresh SQLite database in a temporary folder first. --db takes a
PostgreSQL URL too; a database that already holds the bench's sweeps is read as it is.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import scale_run  # noqa: E402
from bench.common import FARM, Paragraphs  # noqa: E402
from farm.inventory import Inventory  # noqa: E402
from farm.results import Status  # noqa: E402
from farm.store import Store, resolve_url, url_shown  # noqa: E402
from farm.sweep import Sweep, expand  # noqa: E402

TARGET_S = 2.0
GRID = "scale-grid"  # the heavy sweep
TYPICAL = "scale-01"  # one of the others
MODELS = ("bert-tiny", "bert-mini", "bert-small", "bert-medium", "bert-base", "bert-large")
VARIANTS = ("fp32", "int8", "fp16", "stream", "stream+int8",
            {"name": "heads-25", "prune_heads": 0.25}, {"name": "heads-50", "prune_heads": 0.5},
            {"name": "rank-25", "low_rank": {"rank": 0.25}},
            {"name": "rank-50", "low_rank": {"rank": 0.5}},
            {"name": "ffn-50", "prune_ffn": 0.5},
            {"name": "mag-50", "magnitude": {"sparsity": 0.5}},
            {"name": "mag-90", "magnitude": {"sparsity": 0.9}})
BATCHES, SEQ_LENS = (1, 2, 4, 8, 16, 32), (64, 128, 256, 512)
POOLS = {"nano": 4, "xeon": 2}  # tag: devices
UNIT = len(MODELS) * len(BATCHES) * len(SEQ_LENS) * len(POOLS)  # jobs per variant and repeat
SCALE = {"bert-tiny": 0.05, "bert-mini": 0.15, "bert-small": 0.4, "bert-medium": 0.8,
         "bert-base": 2.5, "bert-large": 8.0}  # ms per sample at s128 on a Xeon core
LIMIT_MB = 2048.0
SAVINGS = {"heads-25": (0.85, 0.93), "heads-50": (0.7, 0.86), "rank-25": (0.45, 0.5),
           "rank-50": (0.7, 0.75), "ffn-50": (0.67, 0.7)}  # FLOPs and parameters kept


def lab_sweeps(results: int) -> list[Sweep]:
    """The grid (about a fifth of `results`: every variant, as many repeats as that takes) and
    sweeps of 6 variants and 3 repeats (5,184 results) for the rest: at least `results` jobs."""
    grid = _sweep(GRID, 0, len(VARIANTS), max(1, round(results / 5 / UNIT / len(VARIANTS))))
    rest = results - UNIT * len(VARIANTS) * grid.repeats
    return [grid] + [_sweep(f"scale-{i:02d}", i, 6, 3)
                     for i in range(1, 1 + max(0, math.ceil(rest / (UNIT * 6 * 3))))]


def _sweep(name: str, index: int, variants: int, repeats: int) -> Sweep:
    """fp32 and variants - 1 others, a different choice in each sweep."""
    others = [VARIANTS[1 + (index + i) % (len(VARIANTS) - 1)] for i in range(variants - 1)]
    return Sweep(name=name, devices=tuple(POOLS), models=MODELS, variants=[VARIANTS[0], *others],
                 batch_sizes=BATCHES, seq_lens=SEQ_LENS, repeats=repeats)


def inventory() -> Inventory:
    return Inventory.model_validate({"devices": [
        {"name": f"{tag}-{n}", "kind": "cgroup", "memory": "2GiB", "cpus": 1, "tags": [tag]}
        for tag, count in POOLS.items() for n in range(1, count + 1)]})


class BatchedStore(Store):
    """The store writing as it always does, its writes committed a batch at a time (one
    commit per job made the fill's hours; the rows are the same)."""

    def __init__(self, url: str, every: int = 2_000):
        super().__init__(url)
        self._db, self._writes, self._every = self.session(), 0, every
        self.session = lambda: contextlib.nullcontext(self._db)  # reads see what is pending

    @contextlib.contextmanager
    def _write(self):
        yield self._db
        self._writes += 1
        if self._writes % self._every == 0:
            self._db.commit()

    def close(self) -> None:
        self._db.commit()
        self._db.close()
        super().close()


def fill(url: str, sweeps: list[Sweep], say: Callable[[str], None]) -> float:
    """Every sweep added and every job run through the store, as a controller writes them;
    the seconds it took."""
    start, rng, lab = time.perf_counter(), random.Random(0), inventory()
    store = BatchedStore(url)
    try:
        for device in lab.devices:
            store.device_state(device.name, device.kind, "idle", error=None,
                               facts={"cpus": 1, "memory_mb": LIMIT_MB})
        for i, sweep in enumerate(sweeps):
            ends = time.time() - 86_400 * 3 * (len(sweeps) - 1 - i)  # one every three days
            jobs = _run_sweep(store, sweep, lab, ends, rng)
            say(f"{sweep.name}: {jobs} jobs, {time.perf_counter() - start:.0f} s so far")
    finally:
        store.close()
    return time.perf_counter() - start


def _run_sweep(store: Store, sweep: Sweep, lab: Inventory, ends: float, rng) -> int:
    jobs = expand(sweep, list(POOLS))
    submitted = store.add_sweep(sweep, f"/lab/sweeps/{sweep.name}.yaml", lab, jobs)
    queued = store.runnable_jobs(submitted.id, {job.key for job in jobs})
    at, loaded = ends - 8.0 * len(queued), set()
    for n, job in enumerate(queued):
        device = f"{job.target}-{1 + n % POOLS[job.target]}"
        group = (sweep.name, device, job.spec["model"]["name"], job.spec["variant"],
                 job.spec.get("repeat"))
        store.job_started(job.id, device)
        store.job_finished(job.id, _outcome(job.spec, device, at + 8.0 * n, rng,
                                            None if group in loaded else group))
        loaded.add(group)
    return len(queued)


def _outcome(spec: dict, device: str, at: float, rng, group) -> dict:
    """What a runner reports for one job: done (or oom, or failed) with an agent's figures."""
    model, batch, seq = spec["model"]["name"], spec["batch_size"], spec["seq_len"]
    nano = device.startswith("nano")
    memory = 200 + SCALE[model] * 120 + batch * seq * SCALE[model] * 0.05
    if memory > LIMIT_MB * 0.9 and nano:
        return {"status": Status.OOM, "device": device, "started_at": at, "finished_at": at + 3,
                "error": "out of memory: the container's limit", "failure": "job",
                "result": {"peak_mem_mb": LIMIT_MB, "memory_limit_mb": LIMIT_MB}}
    if rng.random() < 0.005:
        return {"status": Status.FAILED, "device": device, "started_at": at,
                "finished_at": at + 1, "error": "agent crashed: Segmentation fault",
                "failure": "job", "result": {}}
    return {"status": Status.DONE, "device": device, "started_at": at, "finished_at": at + 7,
            "error": None, "result": _figures(spec, nano, memory, rng, group)}


def _figures(spec: dict, nano: bool, memory: float, rng, group) -> dict:
    model, batch, seq = spec["model"]["name"], spec["batch_size"], spec["seq_len"]
    variant = spec["variant"]  # its name
    speed = (0.5 if "int8" in variant else 1.0) * (1.6 if "stream" in variant else 1.0) * \
        (0.7 if variant.split("-")[0] in ("heads", "rank", "ffn") else 1.0) * (4.0 if nano else 1.0)
    flops, params = SAVINGS.get(variant, (1.0, 1.0))
    call = SCALE[model] * speed * batch * seq / 128 * rng.uniform(0.95, 1.05)
    latencies = sorted(call * rng.lognormvariate(0, 0.03) for _ in range(rng.randint(20, 50)))
    n, mean = len(latencies), sum(latencies) / len(latencies)
    q = {p: latencies[round(p / 100 * (n - 1))] for p in (50, 90, 95, 99)}
    return {
        "iters": n, "window_s": sum(latencies) / 1000, "p50_ms": q[50], "p90_ms": q[90],
        "p95_ms": q[95], "p99_ms": q[99], "mean_ms": mean,
        "stdev_ms": math.sqrt(sum((ms - mean) ** 2 for ms in latencies) / (n - 1)),
        "min_ms": latencies[0], "max_ms": latencies[-1], "per_sample_ms": mean / batch,
        "throughput": 1000 * batch / mean, "peak_mem_mb": memory + 300,
        "container_peak_mb": memory + 300, "process_peak_mb": memory,
        "memory_limit_mb": LIMIT_MB, "flops": int(SCALE[model] * 9e9 * seq / 128 * flops),
        "params": int(SCALE[model] * 44e6 * params), "job_s": 7.0, "flops_method": "analytic",
        "baseline_mb": 180.0, "memory_mb": memory, "noise": rng.uniform(0.01, 0.06),
        "load_avg_1m": rng.uniform(0.5, 1.5), "cpu_list": "0", "cpu_mhz_start": 2450.0,
        "cpu_mhz_end": 2440.0, "cpu_mhz_min": 2400.0, "temp_c_end": 48.0,
        # to the nanosecond, as an agent reports them (to a tenth of a microsecond, a
        # sweep's repeats had the same medians, which measured latencies never have)
        "clock_source": "cpufreq", "latencies_ms": [round(ms, 6) for ms in rng.sample(
            latencies, len(latencies))],
        "logits": [[round(rng.gauss(0, 1), 5) for _ in range(2)] for _ in range(batch)],
        "env": {"python": "3.11.9", "torch": "2.5.1", "cpu": "AMD EPYC 7B13", "host": "lab-1"},
        "load": group and {"load_key": hashlib.sha256(repr(group).encode()).hexdigest()[:32],
                           "model": spec["model"], "variant": spec["variant"], "load_s": 2.0}}


@dataclass(frozen=True)
class Reader:
    command: str  # as the table shows it
    sweep: str  # the sweep it reads ("" for the whole database)
    argv: list[str]  # after `farm`
    call: Callable[[], object]  # the API behind it, in this process
    url: str  # the database it reads
    alone: bool = False  # a database of its sweep alone

    @property
    def where(self) -> str:
        return f"{self.sweep}{' alone' if self.alone else ''}"

    @property
    def name(self) -> str:
        return f"{self.command} {self.where}".strip()


QUERY = "select count(*) from v_results"


def readers(url: str, sweeps: list[str], out: Path,
            alone: dict[str, str] | None = None) -> list[Reader]:
    """Status and farm sql over the whole database; the sweep's readers for each sweep, and
    for each of `alone` (sweep -> a database of it alone) the same on that database."""
    from farm.readers import sql, status_snapshot

    return [Reader("farm status --once", "", ["status", "--once"], lambda: status_snapshot(url),
                   url),
            *(reader for sweep in sweeps for reader in _sweep_readers(url, sweep, out / sweep)),
            *(reader for sweep, its in (alone or {}).items()
              for reader in _sweep_readers(its, sweep, out / f"{sweep}-alone", alone=True)),
            Reader("farm sql count(*)", "", ["sql", QUERY], lambda: sql(QUERY, url), url)]


def _sweep_readers(url: str, sweep: str, out: Path, alone: bool = False) -> list[Reader]:
    from farm.export import export_rows
    from farm.readers import compare, sweep_rows, table_rows
    from farm.tables import research_table

    return [
        Reader("farm table", sweep, ["table", sweep],
               lambda: research_table(table_rows(sweep, url)), url, alone),
        Reader("farm report", sweep, ["report", sweep, "--out", str(out / "report")],
               lambda: _report(sweep, url, out / "report-api"), url, alone),
        Reader("farm compare", sweep, ["compare", sweep], lambda: compare(sweep, db=url), url,
               alone),
        Reader("farm export", sweep, ["export", sweep, "--out", str(out / "export.csv")],
               lambda: export_rows(*sweep_rows(sweep, url, with_latencies=True), "csv",
                                   out / "export-api.csv"), url, alone)]


def _report(sweep: str, url: str, out: Path) -> list[Path]:
    """farm report's work, in this process, as the command does it (a chart per core at once,
    the comparisons worked out meanwhile)."""
    from farm.readers import report_reading
    from farm.report import write_report

    rows, against_fp32 = report_reading(sweep, url)
    return write_report(rows, out, sweep, against_fp32, processes=os.cpu_count() or 1)


# A user's Python keeps farm's compiled modules (__pycache__); where this shell says not to
# (PYTHONDONTWRITEBYTECODE, as CI's does), every command would compile them all again first.
USERS_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def time_cli(reader: Reader, timeout_s: float) -> float:
    """Seconds the command took; infinity where it ran past timeout_s (then stopped)."""
    start = time.perf_counter()
    try:
        done = subprocess.run([FARM, *reader.argv, "--db", reader.url], capture_output=True,
                              text=True, cwd=ROOT, timeout=timeout_s, env=USERS_ENV)
    except subprocess.TimeoutExpired:
        return math.inf
    took = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{reader.name} failed ({done.returncode}): {done.stderr[-2000:]}")
    return took


def time_api(reader: Reader) -> float:
    start = time.perf_counter()
    reader.call()
    return time.perf_counter() - start


def held(url: str) -> tuple[int, int] | None:
    """(jobs, results rows) of the bench's sweeps where the database holds its grid."""
    from farm.readers import sql
    from farm.store.readonly import database_exists

    if not database_exists(url):
        return None
    try:
        _, rows = sql("select count(*), count(r.id) from jobs j join sweeps s on s.id = "
                      "j.sweep_id left join results r on r.job_id = j.id where s.name like "
                      "'scale-%'", url)
        _, grid = sql(f"select count(*) from sweeps where name = '{GRID}'", url)
    except Exception:  # noqa: BLE001 (not a farm database yet: fill it)
        return None
    return rows[0] if grid[0][0] else None


def measure(url: str, sweeps: list[str], rounds: int, only: list[str], timeout_s: float,
            say, alone: dict[str, str] | None = None) -> Table:
    # compiled as a user's first command leaves them, so that no round pays for it
    subprocess.run([sys.executable, "-m", "compileall", "-q", "farm", "agents"], cwd=ROOT,
                   env=USERS_ENV, check=True)
    with tempfile.TemporaryDirectory(prefix="farm-bench-scale-out-") as scratch:
        chosen = [r for r in readers(url, sweeps, Path(scratch), alone)
                  if not only or any(word in r.name for word in only)]
        times = {r.name: ([], []) for r in chosen}
        for round_ in range(rounds):
            shift = round_ % len(chosen)  # each reader goes first in turn
            for reader in chosen[shift:] + chosen[:shift]:
                if math.inf in times[reader.name][0]:
                    continue  # it ran past the time limit once: once is enough
                cli = time_cli(reader, timeout_s)
                # Past the limit on the command line, it would be as slow here.
                api = time_api(reader) if cli < math.inf else math.inf
                times[reader.name][0].append(cli)
                times[reader.name][1].append(api)
                say(f"round {round_ + 1} {reader.name}: {cli:.2f} s, in process {api:.2f} s")
    return _table(chosen, times, _sizes(url, sweeps), timeout_s)


def _sizes(url: str, sweeps: list[str]) -> dict[str, int]:
    from farm.store.readonly import ReadOnly

    with contextlib.closing(ReadOnly(url)) as reader:
        return {sweep: reader.rows("SELECT count(*) AS n FROM v_results WHERE sweep = :s",
                                   {"s": sweep})[0]["n"] for sweep in sweeps}


def _table(chosen: list[Reader], times: dict, sizes: dict[str, int], timeout_s: float) -> Table:
    table = Table(title="farm's readers: seconds as the command line runs them (median, min, "
                  "max), and the API call alone, in process", header_style="bold",
                  caption=f"farm sql count(*): {QUERY}", pad_edge=False)
    for heading in ("reader", "sweep", "jobs", "median s", "min", "max", "rounds",
                    "in process", f"< {TARGET_S:g} s"):
        table.add_column(heading, justify="left" if heading in ("reader", "sweep") else "right",
                         no_wrap=True)
    for reader in chosen:
        cli, api = times[reader.name]
        median = statistics.median(cli)
        table.add_row(reader.command, reader.where or "(all)",
                      str(sizes.get(reader.sweep, "")),
                      *(_seconds(v, timeout_s) for v in (median, min(cli), max(cli))),
                      str(len(cli)), _seconds(statistics.median(api), timeout_s),
                      "yes" if median < TARGET_S else "[red]no[/]")
    return table


def _seconds(value: float, timeout_s: float) -> str:
    return f"> {timeout_s:g}" if value == math.inf else f"{value:.2f}"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=inspect.cleandoc(__doc__),
                                     formatter_class=Paragraphs)
    sub = parser.add_subparsers(dest="command", required=True)
    controller = sub.add_parser(
        "controller", formatter_class=Paragraphs,
        help="the controller's own time per job at several sweep sizes (bench/scale_run.py)",
        description=inspect.cleandoc(scale_run.__doc__))
    controller.add_argument("--sizes", default="100,1000,5000",
                            help="sweep sizes, comma-separated")
    controller.add_argument("--devices", type=int, default=8, help="local devices to run on")
    first = sub.add_parser(
        "first-result", formatter_class=Paragraphs,
        help="a small sweep from submit to its first result, phase by phase "
             "(bench/scale_run.py)", description=inspect.cleandoc(scale_run.__doc__))
    first.add_argument("--rounds", type=int, default=3, help="sweeps to take medians of")
    for name, what in (("fill", "fill a database with the lab's sweeps and say how long it "
                                "took"),
                       ("readers", "time the readers (filling the database first where it "
                                   "does not hold the lab's sweeps)")):
        command = sub.add_parser(name, help=what, description=what, formatter_class=Paragraphs)
        command.add_argument("--db", help="a path or SQLAlchemy URL (PostgreSQL too); default: "
                             "a fresh SQLite file in a temporary folder")
        command.add_argument("--results", type=int, default=100_000,
                             help="results to fill with (e.g. 10000 for a quick run)")
        if name == "readers":
            command.add_argument("--rounds", type=int, default=3, help="runs of each reader")
            command.add_argument("--timeout", type=float, default=600, help="seconds after "
                                 "which a reader is stopped (and not run again)")
            command.add_argument("--sweeps", default=f"{GRID},{TYPICAL}",
                                 help="comma-separated: the sweeps table, report, compare and "
                                 f"export read (default: the grid, and {TYPICAL}, a sweep of "
                                 "the size of most)")
            command.add_argument("--only", default="", help="comma-separated words: time only "
                                 "the readers whose command holds one (e.g. table,compare)")
            command.add_argument("--alone", action="store_true", help="also time each sweep's "
                                 "readers on a database of that sweep alone (SQLite, filled "
                                 "the same way: its shapes, figures of its own), in turn with "
                                 "the others: what the database's other results cost")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    if args.command == "controller":
        scale_run.controller(tuple(int(s) for s in args.sizes.split(",")), args.devices)
        return
    if args.command == "first-result":
        scale_run.first_result(rounds=args.rounds)
        return
    console = Console() if sys.stdout.isatty() else Console(width=120)  # a log keeps its rows
    with contextlib.ExitStack() as stack:
        url = args.db or str(Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="farm-bench-scale-"))) / "lab.db")
        url = resolve_url(url)
        found = held(url)
        if found is None:
            took = fill(url, lab_sweeps(args.results), console.print)
            found = held(url)
            console.print(f"filled {url_shown(url)}: {found[0]} jobs, {found[1]} results rows "
                          f"in {took:.0f} s ({1000 * took / found[0]:.1f} ms a job)")
        else:
            console.print(f"{url_shown(url)} holds {found[0]} jobs, {found[1]} results rows: "
                          "read as it is")
        if args.command == "readers":
            only = [w for w in args.only.split(",") if w]
            sweeps = [w for w in args.sweeps.split(",") if w]
            alone = {}
            for sweep in sweeps if args.alone else []:
                its = [s for s in lab_sweeps(args.results) if s.name == sweep]
                if not its:
                    raise SystemExit(f"--alone: {sweep} is not one of the lab's sweeps")
                alone[sweep] = resolve_url(str(Path(stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="farm-bench-alone-"))) / "alone.db"))
                took = fill(alone[sweep], its, console.print)
                console.print(f"{sweep} alone in {url_shown(alone[sweep])}, {took:.0f} s")
            console.print(measure(url, sweeps, args.rounds, only, args.timeout, console.print,
                                  alone))


if __name__ == "__main__":
    main()
