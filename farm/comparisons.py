"""Variants beside their baselines: what a variant costs and saves against the eager fp32 model
on the same work, and whether its outputs are still the model's.

    compare(rows, elsewhere) -> [Compared]   every v_results row of a sweep, with its baselines

A row's baseline is the eager fp32 run (no methods) of the same model, task, batch size and
sequence length: on the same device where it finished there, else on another device of its
pool (the sweep's target: a pool's devices are alike, and its jobs land on any of them), else
on another pool's device of the sweep (a smaller container's streamed variant against eager
where eager ran out of memory), else one of `elsewhere`: the results of other sweeps that may
stand in for the row's own (farm.store.queries.baselines_elsewhere: the same weights on the same
kind of device), on the same device first. One of another pool or another sweep may have run on
other hardware: baseline_elsewhere says so, and the tables mark it. An fp32 run that ended oom in a small container is compared nowhere. Against
it: time per sample, model memory, parameters and FLOPs as ratios, and Δlogit, the largest
|logit − fp32's| on the first batch (catalog weights are seeded, so every variant of a catalog
model starts from the same weights; a method's Δlogit is what it changed). A streamed variant
also has a reference: the eager run of its own precision and methods, whose logits streaming
must give.
"""
from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from operator import itemgetter

from agents.methods import Variant
from farm.results import Status


def variant_of(row: dict) -> Variant:
    """A v_results row's variant: its name, and its spec where the row has one (the named
    variants of earlier releases have none)."""
    spec = row.get("variant_spec")
    return Variant.from_job({"variant": row["variant"],
                             "variant_spec": json.loads(spec) if spec else None})


@dataclass(frozen=True)
class Compared:
    result: dict  # the v_results row
    variant: Variant
    baseline: dict | None  # the eager fp32 result of the same work
    reference: dict | None  # streamed: the eager result of the same precision and methods

    @property
    def is_baseline(self) -> bool:
        return self.baseline is self.result

    @property
    def baseline_elsewhere(self) -> bool:
        """The baseline ran in another sweep (one of compare's `elsewhere`), or in another pool
        of this one (its target's devices finished none)."""
        return _elsewhere(self.result, self.baseline)

    @property
    def reference_elsewhere(self) -> bool:
        return _elsewhere(self.result, self.reference)

    def _ratio(self, column: str) -> float | None:
        value, against = self.result.get(column), self.baseline and self.baseline.get(column)
        return value / against if value is not None and against else None

    @property
    def latency_ratio(self) -> float | None:
        return self._ratio("per_sample_ms")

    @property
    def memory_ratio(self) -> float | None:
        return self._ratio("model_memory_mb")

    @property
    def params_ratio(self) -> float | None:
        return self._ratio("params")

    @property
    def flops_ratio(self) -> float | None:
        return self._ratio("flops")

    @property
    def logit_gap(self) -> float | None:
        """max |logit − eager fp32's| on the first batch."""
        if self.baseline is None or self.is_baseline:
            return None
        return logit_gap(self.result.get("logits_json"), self.baseline.get("logits_json"))

    @property
    def stream_gap(self) -> float | None:
        """Streamed: max |logit − the eager model's of the same precision and methods|."""
        if self.reference is None or self.reference is self.result:
            return None
        return logit_gap(self.result.get("logits_json"), self.reference.get("logits_json"))


def _elsewhere(row: dict, other: dict | None) -> bool:
    """`other` ran in another sweep, or on another pool (target) than row: perhaps on other
    hardware, which the tables mark."""
    return other is not None and (other.get("sweep") != row.get("sweep")
                                  or other.get("target") != row.get("target"))


def logit_gap(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    left, right = json.loads(a), json.loads(b)
    if len(left) != len(right) or any(len(x) != len(y) for x, y in zip(left, right)):
        return None
    return max((abs(x - y) for row_a, row_b in zip(left, right) for x, y in zip(row_a, row_b)),
               default=None)


def has_streams(rows: list[dict]) -> bool:
    return any(variant_of(r).streamed for r in rows)


def has_methods(rows: list[dict]) -> bool:
    return any(variant_of(r).methods for r in rows)


def row_key(row: dict) -> tuple:
    """What `elsewhere` is keyed by: a row's sweep and job."""
    return row.get("sweep"), row.get("job_key")


def compare(rows: list[dict], elsewhere: Mapping[tuple, list[dict]] | None = None
            ) -> list[Compared]:
    """Every row of the sweep (the baselines too), with its baseline and reference.
    `elsewhere`: by row_key, results of other sweeps that may stand in for a row's own (newest
    first), looked at only where the rows hold none."""
    parsed: dict[tuple, Variant] = {}  # a sweep's thousands of rows hold a dozen variants

    def variant(row: dict) -> Variant:
        key = (row["variant"], row.get("variant_spec"))
        if key not in parsed:
            parsed[key] = variant_of(row)
        return parsed[key]

    variants = [variant(r) for r in rows]
    elsewhere = elsewhere or {}

    def same_work(a: dict, b: dict) -> bool:
        return all(a[k] == b[k] for k in ("model", "task", "batch_size", "seq_len"))

    def near(row: dict, precision: str, methods: tuple) -> tuple:
        """What a row's candidates share (a coarser key than fits(): looked up, not scanned for,
        so that a sweep of thousands of rows is not compared with itself row by row)."""
        return (precision, tuple(m for m, _ in methods),
                *(row[k] for k in ("model", "task", "batch_size", "seq_len")))

    candidates: dict[tuple, list[tuple[dict, Variant]]] = {}
    for r, v in zip(rows, variants):
        if r["status"] == Status.DONE and not v.streamed:
            candidates.setdefault(near(r, v.precision, v.methods), []).append((r, v))
    # What eager() found, by its near() key, its methods (their repr: parameters are dicts) and
    # the device: every repeat of a work on a device has the same baseline.
    found: dict[tuple, dict] = {}

    def eager(row: dict, precision: str, methods: tuple) -> dict | None:
        def fits(r: dict, v: Variant) -> bool:
            return (r["status"] == Status.DONE and not v.streamed and v.precision == precision
                    and v.methods == methods and same_work(r, row))

        key = near(row, precision, methods)
        seen = (key, repr(methods), row["device"])
        if seen in found:
            return found[seen]
        done = [r for r, v in candidates.get(key, ()) if fits(r, v)]
        shared = bool(done)  # else the row's own stand-ins from elsewhere: not kept for others
        done = done or [r for r in elsewhere.get(row_key(row), ()) if fits(r, variant_of(r))]
        here = [r for r in done if r["device"] == row["device"]]
        pool = [r for r in done if r.get("target") == row.get("target")]
        pick = (here or pool or done or [None])[0]
        if shared:
            found[seen] = pick
        return pick

    return [Compared(r, v, eager(r, "fp32", ()),
                     eager(r, v.precision, v.methods) if v.streamed else None)
            for r, v in zip(rows, variants)]


# --- Significance: `farm compare` ------------------------------------------------------------
# Two results of the same work (model, task, batch size, sequence length) that differ in one
# thing (the variant, the device, or the sweep): is the second faster, slower, or not
# distinguishable (benchstat's "~")? With a sweep's `repeats` on both sides, judged between
# repeats, each repeat (a fresh agent process) by its median: the spread between processes is
# then part of the test. Else judged on the raw per-call latencies, within one process each,
# which cannot see that spread.

CONFIDENCE = 0.95
RESAMPLES = 9999
SEED = 0  # the bootstrap is seeded: the same database gives the same intervals
# The smallest change called faster or slower (pyperf's --min-speed): a 1% shift can be
# significant on thousands of calls and still be nothing a user would act on.
MIN_CHANGE = 0.02
_WORK = ("model", "task", "batch_size", "seq_len")
# The v_results columns a Difference's rows hold (farm.readers.compare reads no others): what
# pairs its sides, and what `farm compare` shows of them.
COLUMNS = ("sweep", "job_key", "device", "target", *_WORK, "variant", "status", "repeat",
           "p50_ms", "memory_mb", "peak_mem_mb")


@dataclass(frozen=True)
class Difference:
    baseline: dict  # v_results rows, COLUMNS at least (the first repeat's, where several)
    other: dict
    ratio: float | None  # median latency of other / baseline's (below 1: other is faster)
    low: float | None  # the ratio's 95% bootstrap interval
    high: float | None
    p_value: float | None  # Mann-Whitney U, two-sided
    calls: tuple[int, int]  # timed calls behind each side
    score_diff: float | None = None  # other's main metric - baseline's, on the same examples
    score_low: float | None = None  # its paired 95% bootstrap interval
    score_high: float | None = None
    repeats: tuple[int, int] = (1, 1)  # measured repeats behind each side
    min_change: float = MIN_CHANGE
    medians: tuple[float | None, float | None] = (None, None)  # ms: the ratio's two sides

    @property
    def between_repeats(self) -> bool:
        """Judged on each repeat's median (both sides have 2 or more), not on calls."""
        return min(self.repeats) >= 2

    @property
    def decidable(self) -> bool:
        """Whether Mann-Whitney can reach p < 0.05 on so few repeats at all: its smallest
        two-sided p over n and m values is 2 / C(n+m, n) (3 against 3: 0.1, 4 against 4: 0.029)."""
        import math
        n, m = self.repeats
        return not self.between_repeats or 2 / math.comb(n + m, n) < 1 - CONFIDENCE

    @property
    def verdict(self) -> str:
        """faster / slower where the interval excludes 1, p < 0.05 and the ratio is more than
        min_change from 1; else ~."""
        if None in (self.ratio, self.p_value, self.low, self.high):
            return "n/a"
        significant = self.p_value < 1 - CONFIDENCE and (self.high < 1 or self.low > 1)
        if not significant or abs(self.ratio - 1) <= self.min_change:
            return "~"
        return "faster" if self.high < 1 else "slower"

    @property
    def memory_diff_mb(self) -> float | None:
        """other's memory - baseline's: the jobs' own (memory_mb) where both have it, which does
        not depend on who read the page cache first; else the container peaks."""
        for column in ("memory_mb", "peak_mem_mb"):
            a, b = self.baseline.get(column), self.other.get(column)
            if a is not None and b is not None:
                return b - a
        return None


def difference(baselines: list[dict], others: list[dict], latencies: dict[str, list[float]],
               scored: dict[str, list], min_change: float = MIN_CHANGE) -> Difference:
    """One side's repeats (v_results rows) against the other's, given each job's raw
    latencies and predictions by job key."""
    return differences([(baselines, others)], latencies, scored, min_change)[0]


def differences(found: list[tuple[list[dict], list[dict]]], latencies: dict[str, list[float]],
                scored: dict[str, list], min_change: float = MIN_CHANGE) -> list[Difference]:
    """difference() of each (baselines, others) in found, the latencies of them all judged
    together (latency_differences: the same figures, in a few calls into scipy)."""
    runs = [tuple([latencies[r["job_key"]] for r in side if latencies.get(r["job_key"])]
                  for side in pair) for pair in found]
    medians: dict[int, float | None] = {}  # by run: a baseline's, judged against each other

    def median(run: list[float]) -> float | None:
        if id(run) not in medians:
            medians[id(run)] = _median(run)
        return medians[id(run)]

    values = [judged_values(a, b, median) for a, b in runs]
    judged = latency_differences(values)
    made = []
    for (bases, others), (a, b), (va, vb), latency in zip(found, runs, values, judged):
        base, other = bases[0], others[0]
        score = (None, None, None)
        if base["job_key"] in scored and other["job_key"] in scored:
            score = score_difference(base["task"], scored[base["job_key"]],
                                     scored[other["job_key"]])
        made.append(Difference(base, other, *latency, (sum(map(len, a)), sum(map(len, b))),
                               *score, repeats=(len(a), len(b)), min_change=min_change,
                               medians=(_median(va), _median(vb))))
    return made


def judged_values(baseline_runs: list[list[float]], other_runs: list[list[float]], median):
    """What each side's latencies are judged on: each repeat's median (`median` of a run)
    where both sides have 2 or more repeats, else every timed call (a side's repeats' calls
    together)."""
    if len(baseline_runs) >= 2 and len(other_runs) >= 2:
        return ([median(run) for run in baseline_runs], [median(run) for run in other_runs])
    return ([ms for run in baseline_runs for ms in run],
            [ms for run in other_runs for ms in run])


def _median(values: list[float]) -> float | None:
    """numpy's median of a short list (the same float: the middle value, or the two middle
    ones' sum halved), without numpy's cost per call, which thousands of pairs add up."""
    return float(statistics.median(values)) if values else None


def latency_difference(baseline_ms: list[float], other_ms: list[float], seed: int = SEED):
    """(ratio of medians, its interval's low and high, Mann-Whitney p) of other against
    baseline; Nones where either side has fewer than 2 calls."""
    return latency_differences([(baseline_ms, other_ms)], seed)[0]


def latency_differences(pairs: list[tuple[list[float], list[float]]], seed: int = SEED):
    """latency_difference() of each (baseline ms, other ms), all pairs at once
    (farm.resampling: the figures scipy gives each pair alone)."""
    from farm.resampling import ratio_of_medians

    return ratio_of_medians(pairs, RESAMPLES, CONFIDENCE, seed)


def score_difference(task: str, baseline: list[tuple[str, str]], other: list[tuple[str, str]],
                     seed: int = SEED):
    """(other's main metric - baseline's, paired 95% bootstrap interval) over the examples both
    predicted, given (label, prediction) per example in file order; Nones when unpaired."""
    import numpy as np
    from scipy import stats

    from farm.glue.metrics import compute
    from farm.glue.tasks import TASKS

    spec = TASKS.get(task)
    if spec is None or not baseline or len(baseline) != len(other) or \
            [label for label, _ in baseline] != [label for label, _ in other]:
        return None, None, None
    labels = [label for label, _ in baseline]
    guess_a, guess_b = [p for _, p in baseline], [p for _, p in other]
    main = spec.metrics[0]

    def diff(index):
        index = list(index)
        pick = [labels[i] for i in index]
        a = compute(spec, pick, [guess_a[i] for i in index])[main]
        b = compute(spec, pick, [guess_b[i] for i in index])[main]
        return np.nan if a is None or b is None else b - a

    whole = diff(range(len(labels)))
    if np.isnan(whole) or len(labels) < 2:
        return None, None, None
    interval = stats.bootstrap((np.arange(len(labels)),), diff, n_resamples=999,
                               vectorized=False, paired=True, confidence_level=CONFIDENCE,
                               method="percentile",
                               rng=np.random.default_rng(seed)).confidence_interval
    return float(whole), _finite(interval.low), _finite(interval.high)


def _finite(value) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def runs(rows: list[dict], columns: tuple) -> dict[tuple, list[dict]]:
    """The done rows by these columns' values, each group's rows in the order of their repeat."""
    found: dict[tuple, list[dict]] = {}
    key = itemgetter(*columns)  # their values' tuple (of two columns or more)
    for row in rows:
        if row["status"] == Status.DONE:
            found.setdefault(key(row), []).append(row)
    return {k: sorted(v, key=lambda r: r.get("repeat") or 1) for k, v in found.items()}


def pairs(rows: list[dict], by: str, baseline: str) -> list[tuple[list[dict], list[dict]]]:
    """(baseline's repeats, other's repeats) for each done result whose `by` column differs
    from the baseline's on the same work; variants are compared within a pool of devices (the
    sweep's target), devices within a variant."""
    fixed = _WORK + (("target",) if by == "variant" else ("variant",))
    groups: dict[tuple, list[list[dict]]] = {}
    for key, side in runs(rows, fixed + (by, "target")).items():
        groups.setdefault(key[:len(fixed)], []).append(side)
    found = []
    for sides in groups.values():
        bases = [side for side in sides if side[0][by] == baseline]
        for base in bases[:1]:
            found += [(base, side) for side in sides if side[0][by] != baseline]
    return found


def sweep_pairs(first: list[dict], second: list[dict]) -> list[tuple[list[dict], list[dict]]]:
    """(first sweep's repeats, second's) for each work and variant both finished: the same
    jobs in two sweeps (two devices, two releases of a model, two days). A side is paired with
    the other sweep's on the same target (pool of devices); where that sweep ran the work on
    one target alone, with that one (a sweep on the Nano against one on the Orin). A work the
    other sweep ran on several targets, none of them this side's, has no pair: which of them
    it should be held against, nothing says."""
    key = _WORK + ("variant",)
    theirs: dict[tuple, dict] = {}
    for k, side in runs(second, key + ("target",)).items():
        theirs.setdefault(k[:-1], {})[k[-1]] = side
    found = []
    for k, side in runs(first, key + ("target",)).items():
        targets = theirs.get(k[:-1], {})
        if k[-1] in targets:
            found.append((side, targets[k[-1]]))
        elif len(targets) == 1:
            found.append((side, *targets.values()))
    return found
