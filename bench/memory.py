"""Is a job's memory figure reproducible? bert-mini fp32 b1 s128 in a 2 GiB container, three
ways: the page cache cold (dropped first), warm (the same device again, a fresh agent in the
same cgroup, which was charged for the libraries), and filled by another device (a second
container runs it next, the libraries' pages charged to the first). The container's peak counts the page cache its cgroup
was charged for first; the job's own memory (memory_mb: the agent's resident peak) should not
move. Prints each figure per condition, medians of rounds, and max/min across conditions.
Run as root (cgroups, drop_caches): .venv/bin/python bench/memory.py
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import arguments, job_for, run_on  # noqa: E402
from farm.devices.kinds.cgroup import CgroupDevice, cgroup_runner  # noqa: E402

FIGURES = ("memory_mb", "container_peak_mb", "anon_mb", "kernel_mb", "file_mb")
CONDITIONS = ("cold", "warm", "other device")


def measure(device: CgroupDevice, jobs: list[dict]) -> list[dict]:
    """The jobs one after the other on one container (each group in its own agent)."""
    runner = cgroup_runner(device)
    runner.prepare()
    try:
        return [run_on(runner, job) for job in jobs]
    finally:
        runner.close()


def main() -> None:
    args = arguments(__doc__, model="bert-mini")
    job, again = (job_for(args.model, args.batch, args.seq, args.iters, repeat=r) for r in (1, 2))
    tag = uuid.uuid4().hex[:6]
    first, second = (CgroupDevice(name=f"bench-mem-{tag}-{n}", kind="cgroup",
                                  memory=args.memory, cpus=1) for n in "ab")
    runs: dict[str, list[dict]] = {c: [] for c in CONDITIONS}
    for round_ in range(args.rounds):
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3")
        results = measure(first, [job, again]) + measure(second, [job])
        for condition, result in zip(CONDITIONS, results):
            runs[condition].append(result)
            print(f"round {round_ + 1} {condition:>12}: " + ", ".join(
                f"{f} {result[f]:.0f}" for f in FIGURES if result.get(f) is not None))
    print(f"\n{args.model} fp32 b{args.batch} s{args.seq}, MiB, median of {args.rounds} rounds:")
    print(f"{'':>20}" + "".join(f"{c:>14}" for c in CONDITIONS) + f"{'max/min':>10}")
    for figure in FIGURES:
        medians = [statistics.median(r[figure] for r in runs[c]) for c in CONDITIONS]
        spread = f"{max(medians) / min(medians):.3f}" if min(medians) >= 1 else "n/a"
        print(f"{figure:>20}" + "".join(f"{m:>14.0f}" for m in medians) + f"{spread:>10}")


if __name__ == "__main__":
    main()
