"""Does pinning keep a device's timing its own? A device pinned to one core (cpuset, 1 CPU,
2 GiB) runs bert-base fp32 b1 s128 quiet, beside a CPU hog on the other core, and beside a hog on
its own core, the three interleaved round by round. Prints per condition the median p50, its
ratio to quiet, and the interference farm measured (other processes' share of the device's core,
and whether the row is flagged busy). Goal: hog on the other core within 0.90-1.10 of quiet.
Run as root (cgroups) on a machine with 2 CPUs or more: .venv/bin/python bench/interference.py
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import arguments, job_for, rotations, run_on  # noqa: E402
from farm.devices.kinds.cgroup import CgroupDevice, cgroup_runner  # noqa: E402

HOG = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True: pass"


def main() -> None:
    args = arguments(__doc__)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("needs 2 CPUs: one for the device, one for the hog beside it")
    own, other = cpus[0], cpus[1]
    conditions = {"quiet": None, "hog on the other core": other, "hog on its core": own}
    device = CgroupDevice(name=f"bench-pin-{uuid.uuid4().hex[:6]}", kind="cgroup",
                          memory=args.memory, cpus=1, cores=[own])
    job = job_for(args.model, args.batch, args.seq, args.iters)
    runner = cgroup_runner(device)
    runner.prepare()
    runs: dict[str, list[dict]] = {c: [] for c in conditions}
    try:
        run_on(runner, job)  # the load, and a first run the rounds do not count
        for round_, condition in rotations(list(conditions), args.rounds):
            core = conditions[condition]
            hog = subprocess.Popen([sys.executable, "-c", HOG, str(core)]) \
                if core is not None else None
            try:
                result = run_on(runner, job)
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
            runs[condition].append(result)
            print(f"round {round_ + 1} {condition:>22}: p50 {result['p50_ms']:.2f} ms, outside "
                  f"CPU {result['outside_cpu_share']:.2f}, busy {result['host_busy']}, "
                  f"CPUs {result['cpu_list']}")
    finally:
        runner.close()
    quiet = statistics.median(r["p50_ms"] for r in runs["quiet"])
    print(f"\n{args.model} fp32 b{args.batch} s{args.seq}, pinned to core {own}, median of "
          f"{args.rounds} rounds:")
    for condition, results in runs.items():
        p50 = statistics.median(r["p50_ms"] for r in results)
        share = statistics.median(r["outside_cpu_share"] for r in results)
        busy = sum(r["host_busy"] for r in results)
        print(f"{condition:>22}: p50 {p50:8.2f} ms  ratio to quiet {p50 / quiet:.3f}  "
              f"outside CPU {share:.2f}  flagged busy {busy}/{len(results)}")


if __name__ == "__main__":
    main()
