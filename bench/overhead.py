"""How much farm adds around the work: a sweep of small jobs over two emulated devices.

    overhead = sweep wall time / (agent-side busy time / devices)

Wall time is the whole `submit()` call: validation, Ray start, device preparation, scheduling,
database writes and teardown. Busy time is what the agents themselves spent: each model load
(import, build, FLOPs count) plus each job's warm-up and timed calls. 1.0 would be a farm that
costs nothing; a shell loop that starts a process per job and reloads the model every time is
the alternative users have today. Run as root (cgroups): .venv/bin/python bench/overhead.py
"""
from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from farm.api import submit  # noqa: E402


def one_run(folder: Path, devices: int) -> tuple[float, float, int, float]:
    tag = uuid.uuid4().hex[:6]
    inventory = folder / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({"devices": [
        {"name": f"bench-{tag}-{i}", "kind": "cgroup", "memory": "2GiB", "cpus": 1,
         "tags": ["bench"]} for i in range(devices)]}))
    sweep = folder / "sweep.yaml"
    # 24 small jobs: the demo's small models at seq 128, sweep defaults for measurement.
    sweep.write_text(yaml.safe_dump({
        "name": f"overhead-{tag}", "devices": ["bench"], "models": ["bert-mini", "bert-small"],
        "variants": ["fp32", "int8"], "batch_sizes": [1, 2, 4, 8, 16, 32], "seq_lens": [128],
        "measure": {"warmup": 3, "min_iters": 10, "min_seconds": 1.0}}))
    db = folder / f"{tag}.db"
    started = time.time()
    report = submit(sweep, inventory, db=str(db))
    ended = time.time()
    with sqlite3.connect(db) as conn:
        jobs_s = conn.execute("select sum(job_s) from results").fetchone()[0]
        loads_s = conn.execute("select sum(load_s) from model_loads").fetchone()[0]
        first, last = conn.execute(  # UTC timestamps as Unix seconds
            "select (min(julianday(started_at)) - 2440587.5) * 86400, "
            "(max(julianday(finished_at)) - 2440587.5) * 86400 from jobs").fetchone()
    # Before the first job: validation, Ray's start, devices made ready; after the last:
    # storing, closing the devices, Ray's shutdown.
    fixed = (first - started) + (ended - last)
    return ended - started, (jobs_s + loads_s) / devices, report.total_jobs, fixed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ratios = []
    with tempfile.TemporaryDirectory() as folder:
        for run in range(args.runs):
            wall, busy, jobs, fixed = one_run(Path(folder), devices=2)
            ratios.append(wall / busy)
            print(f"run {run + 1}: {jobs} jobs, wall {wall:.1f} s, agent busy per device "
                  f"{busy:.1f} s, overhead {wall / busy:.3f} (of the wall, {fixed:.1f} s before "
                  f"the first job and after the last: Ray's start and stop mostly)", flush=True)
    print(f"overhead ratio, median of {args.runs}: {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
