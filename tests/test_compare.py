"""`farm compare` on a real sweep (real Ray, cgroups, SQLite): its figures are scipy's on the raw
latencies the database holds, int8 is told faster than fp32, and bad input is one line."""
from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

FARM = str(Path(sys.executable).parent / "farm")


def _farm(*args, cwd):
    return subprocess.run([FARM, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def measured(tmp_path_factory, cgroups):
    folder = tmp_path_factory.mktemp("compare")
    name = f"cmp{folder.name[-6:]}"
    (folder / "inventory.yaml").write_text(yaml.safe_dump({"devices": [
        {"name": f"{name}-dev", "kind": "cgroup", "memory": "2GiB", "cpus": 1}]}))
    (folder / "sweep.yaml").write_text(yaml.safe_dump({
        "name": "speed", "devices": [f"{name}-dev"], "models": ["bert-small"],
        "variants": ["fp32", "int8"], "batch_sizes": [1], "seq_lens": [64],
        "measure": {"warmup": 2, "min_iters": 30, "min_seconds": 0.3}}))
    done = _farm("submit", "sweep.yaml", "-i", "inventory.yaml", cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder


def _latencies(folder: Path, variant: str) -> list[float]:
    with sqlite3.connect(folder / "farm.db") as db:
        raw, = db.execute("SELECT r.latencies_json FROM results r JOIN jobs j ON j.id = r.job_id "
                          "WHERE j.variant = ?", (variant,)).fetchone()
    return json.loads(raw)


def test_int8_against_fp32_is_scipys_verdict_on_the_stored_latencies(measured):
    done = _farm("compare", "speed", "--baseline", "fp32", "--json", cwd=measured)
    assert done.returncode == 0, done.stderr
    record, = json.loads(done.stdout)
    fp32, int8 = _latencies(measured, "fp32"), _latencies(measured, "int8")
    assert (record["baseline"], record["other"]) == ("fp32", "int8")
    assert (record["baseline_calls"], record["other_calls"]) == (len(fp32), len(int8))
    assert record["ratio"] == pytest.approx(np.median(int8) / np.median(fp32), rel=1e-12)
    interval = stats.bootstrap(
        (np.array(fp32), np.array(int8)),
        lambda b, o, axis=-1: np.median(o, axis=axis) / np.median(b, axis=axis),
        n_resamples=9999, vectorized=True, paired=False, confidence_level=0.95,
        method="percentile", rng=np.random.default_rng(0)).confidence_interval
    assert (record["ratio_low"], record["ratio_high"]) == pytest.approx(
        (interval.low, interval.high), rel=1e-12)
    assert record["p_value"] == pytest.approx(
        stats.mannwhitneyu(int8, fp32, alternative="two-sided").pvalue, rel=1e-12)
    # int8's Linear layers run about 2-3x faster on this CPU: far outside the interval's reach
    assert record["verdict"] == "faster" and record["ratio_high"] < 1
    assert record["peak_mem_diff_mb"] is not None


def test_a_sweep_against_itself_is_no_difference_and_csv_says_the_same(measured):
    done = _farm("compare", "speed", "speed", "--csv", cwd=measured)
    assert done.returncode == 0, done.stderr
    records = list(csv.DictReader(io.StringIO(done.stdout)))
    assert {r["other"] for r in records} == {"speed"}
    assert [(r["ratio"], r["p_value"], r["verdict"]) for r in records] == \
        [("1.0", "1.0", "~")] * 2
    table = _farm("compare", "speed", cwd=measured)  # the Rich table, fp32 by default
    assert table.returncode == 0, table.stderr
    assert "faster" in table.stdout and "int8" in table.stdout


@pytest.mark.parametrize("args, message", [
    (["nosuch"], "error: no sweep named 'nosuch' in "),
    (["speed", "--baseline", "fp16"], "error: --baseline names no variant of sweep 'speed' "
                                      "('fp16')"),
    (["speed", "--by", "device"], "error: --by device needs --baseline of sweep 'speed'"),
    (["speed", "--by", "task"], "error: --by 'task' is not a way to compare"),
    (["speed", "speed", "--baseline", "fp32"], "error: --baseline is for one sweep"),
])
def test_bad_input_is_one_line(measured, args, message):
    done = _farm("compare", *args, cwd=measured)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith(message), done.stderr
    assert done.stdout == ""


def test_the_score_difference_is_a_paired_bootstrap_over_the_same_examples():
    from farm.comparisons import score_difference

    rng = np.random.default_rng(7)
    labels = rng.choice(["0", "1"], 200)
    a = np.where(rng.random(200) < 0.80, labels, np.where(labels == "1", "0", "1"))
    b = np.where(rng.random(200) < 0.90, labels, np.where(labels == "1", "0", "1"))
    diff, low, high = score_difference("sst2", list(zip(labels, a)), list(zip(labels, b)))
    correct_a, correct_b = (a == labels).astype(float), (b == labels).astype(float)
    assert diff == pytest.approx(correct_b.mean() - correct_a.mean(), abs=1e-12)
    interval = stats.bootstrap((np.arange(200),), lambda i: correct_b[i].mean() -
                               correct_a[i].mean(), n_resamples=999, vectorized=False,
                               paired=True, method="percentile",
                               rng=np.random.default_rng(0)).confidence_interval
    assert (low, high) == pytest.approx((interval.low, interval.high), abs=1e-12)
    assert low < diff < high
    # other examples, or another order, are not a pair
    assert score_difference("sst2", list(zip(labels, a)), list(zip(labels[::-1], b))) == \
        (None, None, None)
