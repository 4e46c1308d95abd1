"""Is early exit's cost what its layers say? One emulated Nano (a 1-CPU 2 GiB container),
bert-base (catalog) b1 s128: `early_exit: {exit_at: k}` for k = 1..12, each timed per example
beside the full-depth backbone in the same job, and eager fp32 in the same sweep. Prints the
medians over the rounds of each k's per-example latency, its least-squares line against k (with
R²), and the full-depth latency against eager fp32's, all from this one run. Each round is one
sweep whose variants are rotated, so the machine's drift hits every k alike.
Run as root (cgroups): .venv/bin/python bench/early_exit.py [--model bert-base --rounds 3]
"""
from __future__ import annotations

import sqlite3
import statistics
import tempfile
from pathlib import Path

import yaml
from common import arguments, make_device, median

from farm.api import submit
from farm.results import Status

FIGURES = ("variant", "status", "per_sample_ms", "exit_example_ms", "exit_full_ms",
           "exit_flops_mean", "exit_layer_mean", "flops")


def _variants(layers: int) -> list:
    return ["fp32"] + [{"name": f"exit-{k}", "early_exit": {"exit_at": k, "padding": "max_length"}}
                       for k in range(1, layers + 1)]


def _round(folder: Path, device: str, args, variants: list, round_: int) -> dict[str, dict]:
    """One sweep of every variant, in this round's order; each variant's v_results figures."""
    shift = round_ % len(variants)
    name = f"bench-exit-{round_}"
    (folder / "sweep.yaml").write_text(yaml.safe_dump({
        "name": name, "devices": [device], "models": [args.model],
        "variants": variants[shift:] + variants[:shift], "batch_sizes": [args.batch],
        "seq_lens": [args.seq], "retries": 0,
        "measure": {"warmup": 2, "min_iters": int(args.iters), "min_seconds": 0}}))
    db = folder / "farm.db"
    submit(folder / "sweep.yaml", folder / "inventory.yaml", db=str(db))
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute(
            "select " + ", ".join(FIGURES) + " from v_results where sweep = ?", (name,))]
    failed = [r["variant"] for r in rows if r["status"] != Status.DONE]
    if failed:
        raise SystemExit(f"{', '.join(failed)} did not end done: no figures to compare")
    return {r["variant"]: r for r in rows}


def _line(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = a + b x: (a, b, R²)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    a = my - b * mx
    residual = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
    return a, b, 1 - residual / sum((y - my) ** 2 for y in ys)


def main() -> None:
    args = arguments(__doc__, layers=12)
    layers = int(args.layers)
    variants = _variants(layers)
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="farm-bench-exit-") as scratch:
        folder = Path(scratch)
        device = make_device(folder, args.memory, "exit")
        for round_ in range(args.rounds):
            for name, row in _round(folder, device, args, variants, round_).items():
                runs.setdefault(name, []).append(row)
            print(f"round {round_ + 1}: fp32 {runs['fp32'][-1]['per_sample_ms']:.1f} ms/sample",
                  flush=True)
    ks = list(range(1, layers + 1))
    example = [median(runs[f"exit-{k}"], "exit_example_ms") for k in ks]
    # Each job's own ratio: its early exit over the full depth timed beside it, interleaved.
    paired = [statistics.median(r["exit_example_ms"] / r["exit_full_ms"]
                                for r in runs[f"exit-{k}"]) for k in ks]
    full = statistics.median(r["exit_full_ms"] for k in ks for r in runs[f"exit-{k}"])
    eager = median(runs["fp32"], "per_sample_ms")
    # Per round: the median full depth of that round's exit_at jobs over that round's fp32.
    by_round = statistics.median(
        statistics.median(runs[f"exit-{k}"][r]["exit_full_ms"] for k in ks)
        / runs["fp32"][r]["per_sample_ms"] for r in range(args.rounds))
    print(f"\n{args.model} b{args.batch} s{args.seq}, 1 CPU, {args.memory}; medians of "
          f"{args.rounds} rounds, each round one sweep with its variants rotated")
    print(f"{'exit_at':>8}{'ms/example':>12}{'÷ full':>8}{'k / L':>7}{'GFLOP':>8}"
          f"{'mean layer':>12}")
    for k, ms, ratio in zip(ks, example, paired):
        flops = median(runs[f"exit-{k}"], "exit_flops_mean")
        print(f"{k:>8}{ms:>12.1f}{ratio:>8.3f}{k / layers:>7.3f}{flops / 1e9:>8.2f}"
              f"{median(runs[f'exit-{k}'], 'exit_layer_mean'):>12.1f}")
    a, b, r2 = _line([float(k) for k in ks], example)
    pa, pb, pr2 = _line([float(k) for k in ks], paired)
    print(f"\nper-example ms = {a:.1f} + {b:.1f} × k   (R² = {r2:.4f})")
    print(f"paired ÷ full  = {pa:.3f} + {pb:.4f} × k   (R² = {pr2:.4f})")
    print(f"full depth, timed beside each exit_at job: {full:.1f} ms/example; eager fp32 in the "
          f"same sweeps: {eager:.1f} ms/sample; ratio {full / eager:.3f} (per round: "
          f"{by_round:.3f})")
    print("\n÷ full: each job's early-exit latency over the full depth timed beside it in the "
          "same job (median over rounds)")


if __name__ == "__main__":
    main()
