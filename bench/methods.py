"""Do the methods' savings in parameters and FLOPs become time and memory on the device? One
emulated Nano (a 1-CPU 2 GiB container), bert-base b1 s128: eager fp32, int8, prune_heads 0.5,
low_rank 0.25, kronecker [32, 32], prune_ffn 0.5, magnitude 0.9 on dense kernels and on torch's
sparse CSR matmul, measured through farm itself, each variant its own sweep, the variants' order
rotated round by round. Prints each variant's median over the rounds (ms/sample, params, nonzero
params, GFLOP/sample, model MiB, Δlogit against fp32) and its ratios to fp32, from this one run.
Run as root (cgroups): .venv/bin/python bench/methods.py [--model bert-base --rounds 3]
"""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from common import arguments, make_device, measure_alone, median, rotations

from farm.comparisons import logit_gap

FIGURES = ("per_sample_ms", "params", "nonzero_params", "flops", "model_memory_mb", "logits_json",
           "kernel")
VARIANTS = (
    "fp32", "int8",
    {"name": "heads-50", "prune_heads": 0.5}, {"name": "rank-25", "low_rank": {"rank": 0.25}},
    {"name": "kron-32", "kronecker": {"shape": [32, 32]}}, {"name": "ffn-50", "prune_ffn": 0.5},
    {"name": "mag-90", "magnitude": {"sparsity": 0.9}},
    {"name": "mag-90-csr", "magnitude": {"sparsity": 0.9, "kernel": "sparse"}},
)


def _name(variant) -> str:
    return variant if isinstance(variant, str) else variant["name"]


def main() -> None:
    args = arguments(__doc__)
    names = [_name(v) for v in VARIANTS]
    runs: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="farm-bench-methods-") as scratch:
        folder = Path(scratch)
        device = make_device(folder, args.memory, "methods")
        for round_, variant in rotations(list(VARIANTS), args.rounds):
            run = measure_alone(folder, device, args.model, variant, args.batch, args.seq,
                                args.iters, round_, FIGURES)
            runs[_name(variant)].append(run)
            print(f"round {round_ + 1} {_name(variant)}: {run['per_sample_ms']:.1f} ms/sample",
                  flush=True)
    med = {n: {f: median(runs[n], f) for f in FIGURES if f not in ("logits_json", "kernel")}
           for n in names}
    base = med["fp32"]
    print(f"\n{args.model} b{args.batch} s{args.seq}, 1 CPU, {args.memory}; medians of "
          f"{args.rounds} rounds, variants interleaved")
    print(f"{'variant':<11}{'ms/sample':>10}{'params M':>9}{'nonzero M':>10}{'GFLOP':>7}"
          f"{'model MiB':>10}{'Δlogit':>9}{'× time':>8}{'paired':>8}{'× params':>9}"
          f"{'× FLOPs':>8}{'× memory':>9}  kernel")
    for n in names:
        m = med[n]
        gap = logit_gap(runs[n][0]["logits_json"], runs["fp32"][0]["logits_json"])
        # the same round's fp32 beside it: the median of those ratios shrugs off slow drift
        paired = statistics.median(r["per_sample_ms"] / b["per_sample_ms"]
                                   for r, b in zip(runs[n], runs["fp32"]))
        print(f"{n:<11}{m['per_sample_ms']:>10.1f}{m['params'] / 1e6:>9.2f}"
              f"{m['nonzero_params'] / 1e6:>10.2f}{m['flops'] / 1e9:>7.2f}"
              f"{m['model_memory_mb']:>10.0f}{'–' if n == 'fp32' else format(gap, '.3f'):>9}"
              f"{m['per_sample_ms'] / base['per_sample_ms']:>8.2f}{paired:>8.2f}"
              + "".join(f"{m[f] / base[f]:>{w}.2f}" for f, w in (
                  ("params", 9), ("flops", 8), ("model_memory_mb", 9)))
              + f"  {runs[n][0]['kernel'] or '–'}")
    print("\n× time: the medians' ratio to fp32's; paired: the median over rounds of each "
          "round's ratio to that round's fp32. A masked model (magnitude) on dense kernels "
          "stores and computes as many weights as fp32: its FLOPs are fp32's; kernel says "
          "which matmul ran")


if __name__ == "__main__":
    main()
