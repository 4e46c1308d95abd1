"""Repeats: `repeats: N` measures each job N times, each in a fresh agent process, in rounds
interleaved over the sweep in a seeded order; `farm compare` then judges between repeats. The
keys of sweeps without repeats are those of earlier releases; the end-to-end test runs a real
A/A sweep (real Ray, cgroups, SQLite) and checks its figures against scipy's."""
from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from conftest import farm_cli

from farm.controller import Scheduler, group_of, interleaved, repeat_of
from farm.devices import group_key
from farm.errors import ConfigError
from farm.store import QueuedJob
from farm.sweep import expand, load_sweep

def _jobs(write_yaml, **fields):
    data = {"name": "s", "models": ["bert-tiny"], "variants": ["fp32", "int8"]} | fields
    return expand(load_sweep(write_yaml("sweep.yaml", data)), ["x"])


def _queued(jobs) -> list[QueuedJob]:
    return [QueuedJob(i, j.key, j.target, j.runner_spec()) for i, j in enumerate(jobs)]


def _base_group(job: QueuedJob) -> tuple:
    return job.spec["model"]["name"], job.spec["variant"]


def test_repeat_1_keeps_the_key_and_the_agent_of_the_job_without_repeats(write_yaml):
    plain = _jobs(write_yaml)
    # the keys this sweep's jobs had before repeats existed
    assert [j.key for j in plain] == ["d16f0e5d6ea009eb", "8ba120c6d29b6665"]
    assert [j.key for j in _jobs(write_yaml, repeats=1)] == [j.key for j in plain]
    thrice = _jobs(write_yaml, repeats=3)
    assert len(thrice) == 3 * len(plain) and len({j.key for j in thrice}) == len(thrice)
    assert [j.key for j in thrice if j.repeat == 1] == [j.key for j in plain]
    assert sorted(j.repeat for j in thrice) == [1, 1, 2, 2, 3, 3]
    # each repeat its own group (a fresh agent process); repeat 1 the group it always had
    groups = {r: {group_key(j.runner_spec()) for j in thrice if j.repeat == r} for r in (1, 2, 3)}
    assert groups[1] == {group_key(j.runner_spec()) for j in plain}
    assert len(groups[1] | groups[2] | groups[3]) == 6


@pytest.mark.parametrize("value, words", [
    (0, "greater than or equal to 1"), ("x", "integer"), (True, "true is not a number"),
    (1001, "less than or equal to 1000")])
def test_a_bad_repeats_is_one_line_naming_the_field(write_yaml, value, words):
    with pytest.raises(ConfigError) as caught:
        _jobs(write_yaml, repeats=value)
    assert caught.value.field == "repeats"
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_the_order_is_round_major_and_seeded_by_the_sweep(write_yaml):
    jobs = _queued(_jobs(write_yaml, models=["bert-tiny", "bert-mini"], batch_sizes=[1, 4],
                         variants=["fp32", "int8", {"name": "heads-50", "prune_heads": 0.5}],
                         repeats=4))
    assert len(jobs) == 2 * 3 * 2 * 4
    order = interleaved(jobs, "demo")
    shuffled = random.Random(1).sample(jobs, len(jobs))
    assert interleaved(shuffled, "demo") == order  # the same sweep, the same order
    assert interleaved(jobs, "another") != order
    assert [repeat_of(j) for j in order] == [r for r in (1, 2, 3, 4) for _ in range(12)]
    rounds = [order[i:i + 12] for i in range(0, 48, 12)]
    for round_jobs in rounds:
        groups = [_base_group(j) for j in round_jobs]
        assert len(set(groups)) == 6  # every group once in each round ...
        assert all(groups[i] == groups[i + 1] for i in range(0, 12, 2))  # ... its jobs together
        sizes = [j.spec["batch_size"] for j in round_jobs]
        assert sizes == [4, 1] * 6  # heaviest first within a group
    # the groups' order is drawn afresh each round, so that no variant always runs last
    assert len({tuple(_base_group(j) for j in r[::2]) for r in rounds}) > 1


def test_a_device_finishes_a_round_before_the_next(write_yaml):
    order = interleaved(_queued(_jobs(write_yaml, repeats=3)), "s")
    scheduler = Scheduler(None, {"d": None}, {"x": ["d"]}, None, {"d": "cgroup"})
    later = next(j for j in order if repeat_of(j) == 2)
    waiting = next(j for j in order if repeat_of(j) == 1 and group_of(j) != group_of(later))
    scheduler.loaded["d"] = group_of(later)  # its loaded group would spare a load, yet
    assert scheduler._pick("d", [later, waiting]) is waiting
    scheduler.loaded["d"] = group_of(waiting)  # within a round the loaded group comes first
    same_round = [j for j in order if repeat_of(j) == 1]
    assert scheduler._pick("d", same_round) is waiting
    ran, pending = [], list(order)  # one device, as the scheduler hands it jobs
    while pending:
        job = scheduler._pick("d", pending)
        pending.remove(job)
        scheduler.loaded["d"] = group_of(job)
        ran.append(job)
    assert [repeat_of(j) for j in ran] == [1, 1, 2, 2, 3, 3]


# --- End to end: an A/A sweep, each repeat in its own agent, judged between repeats ------------

def _farm(*args, cwd):
    return farm_cli(*args, cwd=cwd, timeout=400)


REPEATS = 4  # each in a fresh agent (an import of torch each); 4 against 4 can still reach p < 0.05


@pytest.fixture(scope="module")
def repeated(tmp_path_factory, cgroups):
    folder = tmp_path_factory.mktemp("repeats")
    device = f"rep{folder.name[-6:]}-dev"
    (folder / "inventory.yaml").write_text(yaml.safe_dump({"devices": [
        {"name": device, "kind": "cgroup", "memory": "2GiB", "cpus": 1}]}))
    (folder / "sweep.yaml").write_text(yaml.safe_dump({
        "name": "aa", "devices": [device], "models": ["bert-mini"],
        "variants": ["fp32", {"name": "fp32-again", "precision": "fp32"}], "repeats": REPEATS,
        "batch_sizes": [1], "seq_lens": [64],
        # a window of half a second, so that a burst of another process on the host falls on
        # a part of a repeat's calls, not on all of them
        "measure": {"warmup": 2, "min_iters": 30, "min_seconds": 0.5}}))
    done = _farm("submit", "sweep.yaml", "-i", "inventory.yaml", cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder


def _db_rows(folder: Path, sql: str) -> list[dict]:
    with sqlite3.connect(folder / "farm.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql)]


def test_every_repeat_is_its_own_result_from_its_own_agent_in_rounds(repeated):
    rows = _db_rows(repeated, "SELECT variant, repeat, status, load_id FROM v_results")
    assert sorted((r["variant"], r["repeat"]) for r in rows) == [
        (v, r) for v in ("fp32", "fp32-again") for r in range(1, REPEATS + 1)]
    assert {r["status"] for r in rows} == {"done"}
    assert len({r["load_id"] for r in rows}) == 2 * REPEATS  # a fresh agent process for each
    assert _db_rows(repeated, "SELECT COUNT(*) AS n FROM model_loads")[0]["n"] == 2 * REPEATS
    ran = _db_rows(repeated, "SELECT id, key, target, spec_json, repeat FROM jobs "
                             "ORDER BY started_at")
    assert [r["repeat"] for r in ran] == [r for r in range(1, REPEATS + 1) for _ in range(2)]
    queued = [QueuedJob(r["id"], r["key"], r["target"], json.loads(r["spec_json"]))
              for r in sorted(ran, key=lambda r: r["id"])]
    assert [j.key for j in interleaved(queued, "aa")] == [r["key"] for r in ran]


def test_a_variant_against_itself_is_no_difference_between_repeats(repeated):
    done = _farm("compare", "aa", "--baseline", "fp32", "--json", cwd=repeated)
    assert done.returncode == 0, done.stderr
    record, = json.loads(done.stdout)
    assert (record["baseline"], record["other"]) == ("fp32", "fp32-again")
    assert (record["between"], record["baseline_repeats"], record["other_repeats"]) == (
        "repeats", REPEATS, REPEATS)
    medians = {}
    for variant in ("fp32", "fp32-again"):
        raw = _db_rows(repeated, "SELECT r.latencies_json FROM results r JOIN jobs j ON "
                                 f"j.id = r.job_id WHERE j.variant = '{variant}' ORDER BY j.repeat")
        medians[variant] = np.array([np.median(json.loads(r["latencies_json"])) for r in raw])
    base, other = medians["fp32"], medians["fp32-again"]
    assert record["ratio"] == pytest.approx(np.median(other) / np.median(base), rel=1e-12)
    interval = stats.bootstrap(
        (base, other), lambda b, o, axis=-1: np.median(o, axis=axis) / np.median(b, axis=axis),
        n_resamples=9999, vectorized=True, paired=False, confidence_level=0.95,
        method="percentile", rng=np.random.default_rng(0)).confidence_interval
    assert (record["ratio_low"], record["ratio_high"]) == pytest.approx(
        (interval.low, interval.high), rel=1e-12)
    assert record["p_value"] == pytest.approx(
        stats.mannwhitneyu(other, base, alternative="two-sided").pvalue, rel=1e-12)
    assert record["verdict"] == "~", record
    print("A/A:", {k: record[k] for k in ("ratio", "ratio_low", "ratio_high", "p_value",
                                          "verdict", "baseline_median_ms", "other_median_ms")})
    table = _farm("compare", "aa", cwd=repeated)
    assert table.returncode == 0, table.stderr
    assert f"{REPEATS} / {REPEATS} repeats" in table.stdout and "unseen" not in table.stdout


def test_the_report_marks_the_difference_that_is_not_one(repeated):
    done = _farm("report", "aa", "-o", "report", cwd=repeated)
    assert done.returncode == 0, done.stderr
    page = (repeated / "report" / "index.html").read_text()
    against = page[page.index("<h2>Against fp32</h2>"):page.index("<h2>All jobs</h2>")]
    row, = [line for line in against.splitlines() if "<td>fp32-again</td>" in line]
    assert row.startswith('<tr class="ns">') and "<td class=\"n\">~</td>" in row
    assert f"{REPEATS} / {REPEATS} repeats" in row and "~: no significant difference" in against
