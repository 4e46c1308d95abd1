"""Valid percentiles: every stored percentile has its distribution-free 95% interval from order
statistics, checked against scipy's binomial; one without an interval is NULL with its note."""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from scipy import stats

from agents.measure import PERCENTILES, calls_for, percentile_ranks, summarize
from farm.api import submit


def _coverage(n, q, ranks):
    low, high = ranks
    return stats.binom.cdf(high - 1, n, q / 100) - stats.binom.cdf(low - 1, n, q / 100)


@pytest.mark.parametrize("n", [6, 10, 36, 50, 72, 200, 368, 1000])
@pytest.mark.parametrize("q", PERCENTILES)
def test_the_ranks_hold_the_percentile_95_percent_of_the_time_and_no_tighter(n, q):
    ranks = percentile_ranks(n, q)
    tail = 0.025
    below = stats.binom.cdf(np.arange(n + 1), n, q / 100)  # P(K <= k)
    possible = below[0] <= tail and 1 - below[n - 1] <= tail
    assert (ranks is not None) == possible
    if ranks:
        low, high = ranks
        assert _coverage(n, q, ranks) >= 0.95
        assert below[low - 1] <= tail and 1 - below[high - 1] <= tail
        # one rank further in, on either side, and that side's tail is too likely
        assert low == n or below[low] > tail
        assert high == 1 or 1 - below[high - 2] > tail


@pytest.mark.parametrize("q", PERCENTILES)
def test_calls_for_is_the_fewest_calls_with_an_interval(q):
    n = calls_for(q)
    assert percentile_ranks(n, q) is not None and percentile_ranks(n - 1, q) is None
    assert {50: 6, 90: 36, 95: 72, 99: 368}[q] == n  # log(0.025) / log(q / 100), rounded up


def test_a_summary_never_holds_a_percentile_without_its_interval():
    latencies = list(np.random.default_rng(3).lognormal(0, 0.3, 40) / 1000)
    result = summarize(latencies, 1, 1.0)
    ms = sorted(x * 1000 for x in latencies)
    for q in (50, 90):
        low, high = percentile_ranks(40, q)
        assert result[f"p{q}_ms"] == pytest.approx(np.percentile(ms, q))
        assert (result[f"p{q}_low_ms"], result[f"p{q}_high_ms"]) == (ms[low - 1], ms[high - 1])
    for q in (95, 99):
        assert result[f"p{q}_ms"] is result[f"p{q}_low_ms"] is result[f"p{q}_high_ms"] is None
    assert result["percentile_note"] == ("not reported, too few calls (40) for a 95% interval: "
                                         "p95 needs 72, p99 needs 368; measure: {percentile: q} "
                                         "times enough")


def test_a_sweep_stores_p99_only_with_enough_calls(cgroups, write_yaml, tmp_path, device_names):
    name, = device_names(1)
    inventory = write_yaml("inventory.yaml", {"devices": [
        {"name": name, "kind": "cgroup", "memory": "1GiB", "cpus": 1}]})
    db = f"sqlite:///{tmp_path / 'farm.db'}"
    base = {"devices": [name], "models": ["bert-tiny"], "batch_sizes": [1], "seq_lens": [16]}
    submit(write_yaml("few.yaml", {**base, "name": "few",
                                   "measure": {"warmup": 1, "min_iters": 10,
                                               "min_seconds": 0}}), inventory, db=db)
    submit(write_yaml("p99.yaml", {**base, "name": "p99",
                                   "measure": {"warmup": 1, "min_iters": 10, "min_seconds": 0,
                                               "percentile": 99, "max_seconds": 120}}),
           inventory, db=db)
    with sqlite3.connect(tmp_path / "farm.db") as connection:
        connection.row_factory = sqlite3.Row
        rows = {r["sweep"]: dict(r) for r in connection.execute(
            "SELECT v.*, r.latencies_json FROM v_results v JOIN jobs j ON j.key = v.job_key "
            "JOIN results r ON r.job_id = j.id")}
    few, p99 = rows["few"], rows["p99"]
    assert few["status"] == p99["status"] == "done"
    assert few["iters"] == 10 and few["p50_ms"] is not None and few["p99_ms"] is None
    assert few["p99_low_ms"] is None and "p99 needs 368" in few["percentile_note"]
    assert p99["iters"] >= 368 and p99["percentile_note"] is None
    ms = sorted(json.loads(p99["latencies_json"]))
    low, high = percentile_ranks(len(ms), 99)
    assert _coverage(len(ms), 99, (low, high)) >= 0.95
    assert (p99["p99_low_ms"], p99["p99_high_ms"]) == pytest.approx((ms[low - 1], ms[high - 1]))
    assert p99["p99_low_ms"] <= p99["p99_ms"] <= p99["p99_high_ms"]
