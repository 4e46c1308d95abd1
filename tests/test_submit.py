"""End to end: real Ray, real cgroups, real SQLite, the agent in real processes."""
from __future__ import annotations

import json
import os
import sqlite3
import statistics

import pytest

from conftest import QUICK_P50
from farm.api import submit


def _inventory(write_yaml, names, memory="1GiB"):
    return write_yaml("inventory.yaml", {"devices": [
        {"name": n, "kind": "cgroup", "memory": memory, "cpus": 1, "tags": ["pool"]}
        for n in names]})


def _rows(db_url, sql="select * from v_results"):
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql)]


def test_sweep_spreads_over_a_pool_and_resubmitting_runs_nothing(
        cgroups, write_yaml, db_url, device_names):
    names = device_names(2)
    inventory = _inventory(write_yaml, names)
    sweep = {"name": "pool", "devices": ["pool"], "models": ["bert-tiny", "bert-mini"],
             "variants": ["fp32", "int8"], "batch_sizes": [1, 4], "seq_lens": [32],
             "measure": QUICK_P50}
    report = submit(write_yaml("sweep.yaml", sweep), inventory, db=db_url)
    assert (report.total_jobs, report.ran, report.counts) == (8, 8, {"done": 8})

    rows = _rows(db_url)
    assert {r["device"] for r in rows} == set(names)
    for r in rows:
        assert r["p50_ms"] > 0 and r["peak_mem_mb"] > 0 and r["flops"] > 0 and r["params"] > 0
        assert r["memory_limit_mb"] == 1024
        assert r["per_sample_ms"] == pytest.approx(r["mean_ms"] / r["batch_size"])
        assert r["energy_mj"] is None  # nothing here can read board power
    for device in names:  # one job at a time per device
        spans = sorted((r["started_at"], r["finished_at"]) for r in rows if r["device"] == device)
        assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:]))

    raw = _rows(db_url, "select r.latencies_json, r.p50_ms, r.iters, r.env_json from results r")
    for r in raw:
        latencies = json.loads(r["latencies_json"])
        assert len(latencies) == r["iters"]
        assert r["p50_ms"] == pytest.approx(statistics.median(latencies), rel=1e-4)
        env = json.loads(r["env_json"])
        assert env["cgroup"] in ("v1", "v2") and env["torch"] and env["agent"]
        assert env["torch_threads"] == 1
        # at the niceness of the process that submitted, not Ray's for its workers (15)
        assert env["niceness"] == os.getpriority(os.PRIO_PROCESS, 0)

    again = submit(write_yaml("sweep.yaml", sweep), inventory, db=db_url)
    assert (again.ran, again.counts) == (0, {"done": 8})
    assert _rows(db_url, "select count(*) n from jobs")[0]["n"] == 8
    assert _rows(db_url, "select sum(attempts) n from jobs")[0]["n"] == 8

    grown = submit(write_yaml("sweep.yaml", sweep | {"batch_sizes": [1, 4, 2]}), inventory,
                   db=db_url)
    assert (grown.total_jobs, grown.ran, grown.counts) == (12, 4, {"done": 12})


def test_a_model_that_cannot_fit_ends_oom_and_the_rest_completes(
        cgroups, write_yaml, db_url, device_names):
    inventory = _inventory(write_yaml, device_names(1), memory="512MiB")
    sweep = {"name": "fit", "models": ["bert-large", "bert-tiny"], "batch_sizes": [1],
             "seq_lens": [32], "measure": QUICK_P50}
    report = submit(write_yaml("sweep.yaml", sweep), inventory, db=db_url)
    assert report.counts == {"oom": 1, "done": 1}
    by_model = {r["model"]: r for r in _rows(db_url)}
    large, tiny = by_model["bert-large"], by_model["bert-tiny"]
    assert large["status"] == "oom" and "512 MiB" in large["error"]
    assert large["memory_limit_mb"] == 512 and large["peak_mem_mb"] >= 0.9 * 512
    assert large["p50_ms"] is None  # nothing was timed, so no latency is shown
    assert tiny["status"] == "done" and tiny["p50_ms"] > 0


def test_a_job_past_its_timeout_is_stopped(cgroups, write_yaml, db_url, device_names):
    inventory = _inventory(write_yaml, device_names(1))
    sweep = {"name": "slow", "models": ["bert-base"], "batch_sizes": [1], "seq_lens": [128],
             "measure": {"warmup": 1, "min_iters": 1000, "min_seconds": 60}, "timeout_s": 8}
    report = submit(write_yaml("sweep.yaml", sweep), inventory, db=db_url)
    assert report.counts == {"timeout": 1} and report.failed == 1
    row = _rows(db_url)[0]
    assert "timeout_s=8" in row["error"]
