"""What does streaming layers cost, and does prefetching win it back? One emulated Nano (a 1-CPU
2 GiB container), one model, eager fp32 / stream / stream+prefetch (and more with --variants)
measured through farm itself, each variant its own sweep, the variants' order rotated round by
round so that the machine's drift hits them all alike. Prints each variant's median over the
rounds (per-sample time, model memory, and per pass: layer MB read, read, wait and compute ms)
and the ratios between them, all from this one run.
Run as root (cgroups): .venv/bin/python bench/stream.py [--model bert-base --rounds 3]
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from common import arguments, make_device, measure_alone, median, rotations

FIGURES = ("per_sample_ms", "model_memory_mb", "bytes_read", "read_ms", "read_wait_ms",
           "compute_ms")


def main() -> None:
    args = arguments(__doc__, variants="fp32,stream,stream+prefetch")
    variants = args.variants.split(",")
    with tempfile.TemporaryDirectory(prefix="farm-bench-stream-") as scratch:
        folder = Path(scratch)
        device = make_device(folder, args.memory, "stream")
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for round_, variant in rotations(variants, args.rounds):
            runs[variant].append(measure_alone(folder, device, args.model, variant, args.batch,
                                               args.seq, args.iters, round_, FIGURES))
            print(f"round {round_ + 1} {variant}: "
                  f"{runs[variant][-1]['per_sample_ms']:.1f} ms/sample", flush=True)
    print(f"\n{args.model} b{args.batch} s{args.seq}, 1 CPU, {args.memory}; medians of "
          f"{args.rounds} rounds")
    print(f"{'variant':<22}{'ms/sample':>10}{'model MiB':>10}{'MB/pass':>9}{'read ms':>9}"
          f"{'wait ms':>9}{'compute ms':>11}")
    med = {v: {f: median(runs[v], f) for f in FIGURES} for v in variants}
    for v in variants:
        m = med[v]
        cells = [m["per_sample_ms"], m["model_memory_mb"],
                 m["bytes_read"] and m["bytes_read"] / 1e6, m["read_ms"], m["read_wait_ms"],
                 m["compute_ms"]]
        widths = (10, 10, 9, 9, 9, 11)
        print(f"{v:<22}" + "".join("–".rjust(w) if c is None else f"{c:{w}.1f}"
                                   for c, w in zip(cells, widths)))
    print()
    pairs = [(a, b) for a in variants for b in variants
             if a != b and variants.index(a) > variants.index(b)]
    for a, b in pairs:
        print(f"per-sample time {a} / {b}: {med[a]['per_sample_ms'] / med[b]['per_sample_ms']:.2f}")
    base = variants[0]
    for v in variants[1:]:
        if med[v]["model_memory_mb"] and med[base]["model_memory_mb"]:
            print(f"model memory {v} / {base}: "
                  f"{med[v]['model_memory_mb'] / med[base]['model_memory_mb']:.2f}")


if __name__ == "__main__":
    main()
