"""What the benchmarks share: one emulated Nano (a cgroup device) to measure on, one variant at
a time through farm itself (each its own sweep, so that every measurement loads its model
afresh), the variants' order rotated round by round so that the machine's drift hits them all
alike, and medians over the rounds.
"""
from __future__ import annotations

import argparse
import inspect
import sqlite3
import statistics
import sys
import textwrap
import uuid
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from farm.api import submit  # noqa: E402
from farm.results import Status  # noqa: E402

FARM = str(Path(sys.executable).parent / "farm")  # this venv's; PYTHONPATH may point elsewhere


class Paragraphs(argparse.HelpFormatter):
    """A docstring as help: each paragraph joined and wrapped to the terminal, never split at a
    hyphen (argparse's own wrapping breaks "per-example")."""

    def _fill_text(self, text, width, indent):
        return "\n\n".join(textwrap.fill(" ".join(p.split()), width, initial_indent=indent,
                                         subsequent_indent=indent, break_on_hyphens=False)
                           for p in text.split("\n\n"))


def arguments(doc: str, **defaults) -> argparse.Namespace:
    """The command line every benchmark takes (its whole docstring as help)."""
    parser = argparse.ArgumentParser(description=inspect.cleandoc(doc), formatter_class=Paragraphs)
    parser.add_argument("--model", default=defaults.pop("model", "bert-base"))
    for name, default in defaults.items():
        parser.add_argument(f"--{name}", default=default)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--iters", type=int, default=20, help="timed calls per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory", default="2GiB", help="the container's memory limit")
    return parser.parse_args()


def make_device(folder: Path, memory: str, name: str) -> str:
    """A 1-CPU container of `memory` in folder/inventory.yaml; its name."""
    device = f"bench-{name}-{uuid.uuid4().hex[:6]}"
    (folder / "inventory.yaml").write_text(yaml.safe_dump({"devices": [
        {"name": device, "kind": "cgroup", "memory": memory, "cpus": 1}]}))
    return device


def measure_alone(folder: Path, device: str, model: str, variant, batch: int, seq: int,
                  iters: int, round_: int, figures: tuple[str, ...]) -> dict:
    """One variant (a sweep-file entry) as a sweep of its own; its v_results figures."""
    label = variant if isinstance(variant, str) else variant["name"]
    sweep, name = folder / "sweep.yaml", f"bench-{label.replace('+', '-')}-{round_}"
    sweep.write_text(yaml.safe_dump({
        "name": name, "devices": [device], "models": [model], "variants": [variant],
        "batch_sizes": [batch], "seq_lens": [seq], "retries": 0,
        "measure": {"warmup": 2, "min_iters": iters, "min_seconds": 0}}))
    db = folder / "farm.db"
    submit(sweep, folder / "inventory.yaml", db=str(db))
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("select status, " + ", ".join(figures) + " from v_results "
                           "where sweep = ?", (name,)).fetchone()
    if row["status"] != Status.DONE:
        raise SystemExit(f"{label} ended {row['status']}: no figures to compare")
    return dict(row)


def rotations(items: list, rounds: int):
    """(round, item) in rotating order: round r starts r places further along."""
    for round_ in range(rounds):
        shift = round_ % len(items)
        for item in items[shift:] + items[:shift]:
            yield round_, item


def median(runs: list[dict], figure: str) -> float | None:
    values = [r[figure] for r in runs if r[figure] is not None]
    return statistics.median(values) if values else None


def job_for(model: str, batch: int, seq: int, iters: int, variant="fp32", repeat=1) -> dict:
    """One job as a device runner is given it (farm.sweep.JobSpec.runner_spec); repeat 2 or
    more is the same job measured again in a fresh agent process."""
    from farm.sweep import Sweep, expand

    sweep = Sweep(name="bench", models=[model], variants=[variant], batch_sizes=[batch],
                  seq_lens=[seq], measure={"warmup": 2, "min_iters": iters, "min_seconds": 0},
                  repeats=repeat)
    job, = [j for j in expand(sweep, ["*"]) if j.repeat == repeat]
    return dict(job.runner_spec(), key=job.key)


def run_on(runner, job: dict) -> dict:
    """A job's result on a prepared runner (no Ray, no database: the device's figures only)."""
    outcome = runner.run(job, lambda event: None)
    if outcome["status"] != Status.DONE:
        raise SystemExit(f"{job['model']['name']} ended {outcome['status']}: {outcome['error']}")
    return outcome["result"]
