"""Does farm report what the model costs? bert-base fp32, batch 1, seq 128, in a 1-CPU 2 GiB
container: farm's reported p50 against a bare timing loop of the same model in the same cgroup
setup (its own process, one thread, same limits), the two interleaved round by round so that
the machine's drift hits both. 1.0 means farm's figure is the model's cost and nothing else.
Run as root (cgroups): .venv/bin/python bench/fidelity.py
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from farm.api import submit  # noqa: E402
from farm.cgroups import open_container  # noqa: E402

MEMORY, CPUS, WARMUP, ITERS = 2 * 2**30, 1, 5, 30

# The bare loop: plain transformers and torch, nothing of farm's measuring code.
BARE = f"""
import statistics, time, torch
from transformers import BertConfig, BertForSequenceClassification
torch.set_num_threads({CPUS})
config = BertConfig(num_hidden_layers=12, hidden_size=768, num_attention_heads=12,
                    intermediate_size=3072, num_labels=2)
model = BertForSequenceClassification(config).eval()
ids = torch.randint(0, config.vocab_size, (1, 128))
mask, types = torch.ones(1, 128, dtype=torch.long), torch.zeros(1, 128, dtype=torch.long)
with torch.inference_mode():
    for _ in range({WARMUP}):
        model(input_ids=ids, attention_mask=mask, token_type_ids=types)
    times = []
    for _ in range({ITERS}):
        t0 = time.perf_counter()
        model(input_ids=ids, attention_mask=mask, token_type_ids=types)
        times.append(time.perf_counter() - t0)
print(statistics.median(times) * 1000)
"""


def farm_p50(folder: Path, tag: str, round_: int) -> float:
    inventory = folder / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({"devices": [
        {"name": f"fid-{tag}", "kind": "cgroup", "memory": MEMORY, "cpus": CPUS}]}))
    sweep = folder / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": f"fidelity-{tag}-{round_}", "models": ["bert-base"], "batch_sizes": [1],
        "seq_lens": [128], "measure": {"warmup": WARMUP, "min_iters": ITERS, "min_seconds": 0}}))
    db = folder / "farm.db"
    submit(sweep, inventory, db=str(db))
    with sqlite3.connect(db) as conn:
        return conn.execute("select p50_ms from v_results where sweep = ?",
                            (f"fidelity-{tag}-{round_}",)).fetchone()[0]


def bare_p50(tag: str) -> float:
    container = open_container(f"fid-bare-{tag}", MEMORY, CPUS)
    try:
        env = dict(os.environ, OMP_NUM_THREADS=str(CPUS), HF_HUB_OFFLINE="1")
        done = subprocess.run(container.join_command([sys.executable, "-c", BARE]),
                              capture_output=True, text=True, env=env, check=True)
        return float(done.stdout.strip().splitlines()[-1])
    finally:
        container.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:6]
    farm, bare = [], []
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            farm.append(farm_p50(Path(folder), tag, round_))
            bare.append(bare_p50(tag))
            print(f"round {round_ + 1}: farm p50 {farm[-1]:.2f} ms, bare loop p50 "
                  f"{bare[-1]:.2f} ms, ratio {farm[-1] / bare[-1]:.3f}", flush=True)
    ratios = [f / b for f, b in zip(farm, bare)]
    print(f"fidelity ratio (farm p50 / bare p50), median of {args.rounds} rounds: "
          f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
