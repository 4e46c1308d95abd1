"""`farm compare` on a real sweep (real Ray, cgroups, SQLite): its figures are scipy's on the raw
latencies the database holds, int8 is told faster than fp32, and bad input is one line."""
from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from conftest import farm_cli

def _farm(*args, cwd):
    return farm_cli(*args, cwd=cwd, timeout=300)


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
    # one repeat a side: judged on the calls of one agent process each
    assert (record["between"], record["baseline_repeats"], record["other_repeats"]) == (
        "calls", 1, 1)
    assert record["baseline_median_ms"] == pytest.approx(np.median(fp32), rel=1e-12)


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
    assert "unseen" in table.stdout  # without repeats, the spread between processes is not seen


def test_compare_reads_only_the_columns_its_differences_hold(measured):
    """farm compare reads a tenth of v_results' columns (farm.comparisons.COLUMNS): the same
    comparisons as from every column of the sweep's rows (farm report's)."""
    from farm.comparisons import COLUMNS
    from farm.compare_view import difference_records
    from farm.readers import compare, variants_against_fp32

    db = str(measured / "farm.db")
    differences = compare("speed", db=db)
    assert differences and all(set(d.baseline) == set(d.other) == set(COLUMNS)
                               for d in differences)
    assert difference_records(differences, "variant") == variants_against_fp32("speed", db)


def test_the_report_compares_while_its_charts_are_drawn_and_shows_the_same(measured, tmp_path):
    """`farm report` reads the sweep once and works out its variants against fp32 while its
    charts are drawn (report_reading): the very files of the comparisons given at once."""
    from farm.readers import report_reading, report_rows
    from farm.report import write_report

    db = str(measured / "farm.db")
    rows, records = report_rows("speed", db)
    assert records and {(r["baseline"], r["other"]) for r in records} == {("fp32", "int8")}
    now = write_report(rows, tmp_path / "now", "speed", records, processes=2)
    rows_read, later = report_reading("speed", db)
    calls = []
    then = write_report(rows_read, tmp_path / "later", "speed",
                        lambda: calls.append(1) or later(), processes=2)
    assert calls == [1] and rows_read == rows
    assert [p.name for p in then] == [p.name for p in now]
    for one, other in zip(now, then):
        assert one.read_bytes() == other.read_bytes(), one.name
    assert "int8" in then[-1].read_text(encoding="utf-8")


@pytest.mark.parametrize("args, message", [
    (["nosuch"], "error: no sweep named 'nosuch' in "),
    (["speed", "--baseline", "fp16"], "error: --baseline names no variant of sweep 'speed' "
                                      "('fp16')"),
    (["speed", "--by", "device"], "error: --by device needs --baseline of sweep 'speed'"),
    (["speed", "--by", "task"], "error: --by 'task' is not a way to compare"),
    (["speed", "speed", "--baseline", "fp32"], "error: --baseline is for one sweep"),
    (["speed", "--min-change", "1.5"], "error: --min-change 1.5 is not a fraction from 0 to 1"),
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


def _judged(baseline_runs, other_runs, min_change=0.02):
    """farm.comparisons.difference over synthetic repeats: a list of per-call latencies each."""
    from farm.comparisons import difference

    def side(name, runs):
        return [{"job_key": f"{name}{i}", "task": "synthetic"} for i in range(len(runs))]

    latencies = {f"{name}{i}": list(run) for name, runs in (("a", baseline_runs),
                                                            ("b", other_runs))
                 for i, run in enumerate(runs)}
    return difference(side("a", baseline_runs), side("b", other_runs), latencies, {}, min_change)


def test_a_significant_change_smaller_than_min_change_is_no_difference():
    rng = np.random.default_rng(3)
    base = rng.normal(10.0, 0.1, 1000)
    one_percent = _judged([base], [rng.normal(10.1, 0.1, 1000)])
    assert one_percent.p_value < 1e-6 and one_percent.low > 1  # significant, yet
    assert one_percent.ratio == pytest.approx(1.01, abs=0.002)
    assert one_percent.verdict == "~"
    assert _judged([base], [rng.normal(10.1, 0.1, 1000)], min_change=0).verdict == "slower"
    assert _judged([base], [rng.normal(10.5, 0.1, 1000)]).verdict == "slower"
    assert _judged([base], [rng.normal(9.5, 0.1, 1000)]).verdict == "faster"
    assert _judged([base], [rng.normal(9.5, 0.1, 1000)], min_change=0.06).verdict == "~"


def test_with_repeats_on_both_sides_each_repeat_is_one_value():
    rng = np.random.default_rng(5)
    base = [rng.normal(10.0 + shift, 0.1, 200) for shift in rng.normal(0, 0.3, 5)]
    other = [rng.normal(8.0 + shift, 0.1, 200) for shift in rng.normal(0, 0.3, 4)]
    judged = _judged(base, other)
    assert judged.between_repeats and judged.repeats == (5, 4) and judged.calls == (1000, 800)
    a, b = np.median(base, axis=1), np.median(other, axis=1)
    assert judged.ratio == pytest.approx(np.median(b) / np.median(a), rel=1e-12)
    interval = stats.bootstrap(
        (a, b), lambda x, y, axis=-1: np.median(y, axis=axis) / np.median(x, axis=axis),
        n_resamples=9999, vectorized=True, paired=False, method="percentile",
        rng=np.random.default_rng(0)).confidence_interval
    assert (judged.low, judged.high) == pytest.approx((interval.low, interval.high), rel=1e-12)
    assert judged.p_value == pytest.approx(stats.mannwhitneyu(b, a).pvalue, rel=1e-12)
    assert judged.verdict == "faster" and judged.decidable  # 20% on 5 and 4 processes: p = 2/126
    too_few = _judged(base[:3], other[:3])  # the smallest p on 3 and 3 values is 0.1
    assert too_few.p_value == pytest.approx(0.1) and too_few.verdict == "~"
    assert not too_few.decidable
    # one repeat on a side: every call of each side, within their processes
    within = _judged(base[:1], other)
    assert not within.between_repeats and within.calls == (200, 800)
    assert within.ratio == pytest.approx(np.median(np.concatenate(other)) / np.median(base[0]))


def test_mann_whitney_of_many_pairs_at_once_is_scipys_to_the_bit():
    """farm.resampling works scipy's Mann-Whitney out itself (scipy.stats alone takes most of a
    second to import): exact for small samples without ties, else the normal approximation
    with its corrections; every p-value the very float scipy gives."""
    from farm.resampling import _mann_whitney

    rng = np.random.default_rng(1)
    for n1, n2 in [(2, 2), (3, 3), (3, 5), (5, 4), (6, 6), (8, 8), (8, 30), (9, 9), (20, 37),
                   (50, 15)]:
        other = rng.lognormal(0, 0.1, (40, n1))
        base = rng.lognormal(0.03, 0.1, (40, n2))
        other[::2], base[::2] = other[::2].round(1), base[::2].round(1)  # ties in half the rows
        mine = _mann_whitney(other, base)
        theirs = [stats.mannwhitneyu(o, b, alternative="two-sided").pvalue
                  for o, b in zip(other, base)]
        assert mine.tolist() == theirs, (n1, n2)
    same = np.ones((1, 4))  # every value tied: p is 1, as scipy says
    assert _mann_whitney(same, same).tolist() == [stats.mannwhitneyu(same[0], same[0]).pvalue]


def test_the_binomial_of_the_exact_p_is_scipys_to_the_bit():
    """The exact Mann-Whitney p divides by n choose k as scipy.special.binom works it out (a
    product of floats, not always the float nearest the count: 185 choose 8 is not), without
    importing scipy.special."""
    from scipy import special

    from farm.resampling import _binomial

    pairs = [(n, k) for n in range(0, 400) for k in range(0, min(n, 30) + 1)]
    assert [_binomial(n, k) for n, k in pairs] == [special.binom(n, k) for n, k in pairs]
    assert any(_binomial(n, k) != float(math.comb(n, k)) for n, k in pairs)


def test_resamples_are_counted_as_numpy_finds_the_distinct_ones():
    """farm.resampling counts each resample's draws, and keeps the distinct resamples in the
    order np.unique(axis=0) gives them (found there by a number per resample)."""
    from farm.resampling import _counted

    rng = np.random.default_rng(2)
    for size in (2, 3, 6, 11):
        indices = rng.integers(0, size, (9999, size))
        counts, which = _counted(indices, size, 9999)
        drawn = np.stack([np.bincount(row, minlength=size) for row in indices])
        distinct, inverse = np.unique(drawn, axis=0, return_inverse=True)
        assert np.array_equal(counts.T, distinct) and np.array_equal(which, inverse.ravel())


def test_a_sweep_of_two_pools_names_the_pool_of_each_comparison():
    """A work's variants are compared within each pool (the sweep's target): the table, the
    records and the report page name it, else the pools' rows of a work read as one
    comparison twice with different figures. What the sides share and the table would not show
    otherwise: the variant between devices, the pool and the variant between sweeps."""
    from rich.console import Console

    from farm.compare_view import difference_records, differences_table
    from farm.comparisons import differences, pairs
    from farm.report_page import compared_section

    rng = np.random.default_rng(7)
    rows, latencies = [], {}
    for target, device, scale in (("nano", "nano-1", 4.0), ("xeon", "xeon-1", 1.0)):
        for variant, speed in (("fp32", 1.0), ("int8", 0.5)):
            key = f"{device}-{variant}"
            rows.append({"sweep": "s", "job_key": key, "device": device, "target": target,
                         "model": "bert-tiny", "task": "synthetic", "batch_size": 1,
                         "seq_len": 64, "variant": variant, "status": "done", "repeat": None,
                         "p50_ms": None, "memory_mb": 10.0, "peak_mem_mb": 20.0})
            latencies[key] = list(rng.normal(scale * speed, 0.01, 50))

    def printed(table) -> list[str]:
        console = Console(width=200, color_system=None, file=io.StringIO())
        console.print(table)
        return [line for line in console.file.getvalue().splitlines() if "bert-tiny" in line]

    found = differences(pairs(rows, "variant", "fp32"), latencies, {})
    by_target = {d.other["target"]: d for d in found}
    assert sorted(by_target) == ["nano", "xeon"]
    lines = printed(differences_table("t", found, "variant"))
    assert len(lines) == 2  # a row a line: "from" is short enough not to wrap
    for target, d in by_target.items():
        line, = [line for line in lines if f" {target} " in line]
        assert f"{d.medians[0]:.2f} → {d.medians[1]:.2f}" in line and "50 / 50 calls" in line
    # at 80 columns the figures that matter least are left out whole, none cut or wrapped
    narrow = Console(width=80, color_system=None, file=io.StringIO())
    narrow.print(differences_table("t", found, "variant", width=80))
    text = narrow.file.getvalue()
    head, = [line for line in text.splitlines() if "model" in line]
    assert max(map(len, text.splitlines())) <= 80
    assert "┃ baseline" not in head and "Δ MiB" not in head  # the two that matter least
    assert "left out at 80 columns: baseline" in " ".join(text.split())
    for target, d in by_target.items():
        line, = [line for line in text.splitlines() if f" {target} " in line]
        assert f" {d.ratio:.3f} " in line and d.verdict in line and " int8 " in line
    wide = Console(width=200, color_system=None, file=io.StringIO())
    wide.print(differences_table("t", found, "variant", width=200))
    assert all(h in wide.file.getvalue() for h in ("baseline", "95% interval", "Δ MiB", "from"))
    records = difference_records(found, "variant")
    assert {(r["target"], r["other_job"]) for r in records} == {("nano", "nano-1-int8"),
                                                                ("xeon", "xeon-1-int8")}
    page = compared_section(records)
    assert "<th>target</th>" in page and "<td>nano</td>" in page and "<td>xeon</td>" in page
    # one pool: no target column; no score on either side: no Δ score column
    one = [d for d in found if d.other["target"] == "xeon"]
    header = Console(width=200, color_system=None, file=io.StringIO())
    header.print(differences_table("t", one, "variant"))
    assert " target " not in header.file.getvalue() and "Δ score" not in header.file.getvalue()
    assert "<th>target</th>" not in compared_section(difference_records(one, "variant"))
    # between devices the variant differs from row to row, and is shown
    by_device = differences(pairs(rows, "device", "nano-1"), latencies, {})
    assert {d.other["variant"] for d in by_device} == {"fp32", "int8"}
    for d, line in zip(by_device, printed(differences_table("t", by_device, "device"))):
        assert f" {d.other['variant']} " in line


def test_two_sweeps_are_compared_pool_by_pool_or_one_pool_against_the_other():
    """farm compare A B: each of A's results against B's of the same work and variant on the
    same target (pool); a sweep of one pool against a sweep of another, across (the table says
    "nano → orin"); where B ran the work on several pools, none of them A's, no pair."""
    from rich.console import Console

    from farm.compare_view import difference_records, differences_table
    from farm.comparisons import differences, sweep_pairs

    def row(sweep, target, seq=64):
        return {"sweep": sweep, "job_key": f"{sweep}-{target}-{seq}", "device": f"{target}-1",
                "target": target, "model": "bert-tiny", "task": "synthetic", "batch_size": 1,
                "seq_len": seq, "variant": "fp32", "status": "done", "repeat": None,
                "p50_ms": None, "memory_mb": None, "peak_mem_mb": None}

    def keys(found):
        return sorted((a[0]["job_key"], b[0]["job_key"]) for a, b in found)

    both = [row("a", "nano"), row("a", "xeon")]
    again = [row("b", "xeon"), row("b", "nano")]
    assert keys(sweep_pairs(both, again)) == [("a-nano-64", "b-nano-64"),
                                              ("a-xeon-64", "b-xeon-64")]
    # one pool each: across them
    assert keys(sweep_pairs([row("a", "nano")], [row("c", "orin")])) == [("a-nano-64",
                                                                           "c-orin-64")]
    # two pools each, none in common: nothing says which to hold against which
    assert sweep_pairs(both, [row("d", "orin"), row("d", "agx")]) == []
    # several pools against one: each against it
    found = sweep_pairs(both, [row("c", "orin")])
    assert keys(found) == [("a-nano-64", "c-orin-64"), ("a-xeon-64", "c-orin-64")]
    rng = np.random.default_rng(11)
    latencies = {r["job_key"]: list(rng.normal(1.0, 0.01, 20))
                 for r in [*both, row("c", "orin")]}
    judged = differences(found, latencies, {})
    console = Console(width=200, color_system=None, file=io.StringIO())
    console.print(differences_table("t", judged, "sweep"))
    text = console.file.getvalue()
    assert " nano → orin " in text and " xeon → orin " in text
    assert {(r["baseline_target"], r["target"]) for r in difference_records(judged, "sweep")} \
        == {("nano", "orin"), ("xeon", "orin")}
