"""`farm compare`'s statistics for thousands of pairs at once: for each pair of samples (a
baseline's latencies and another's), the ratio of their medians, scipy's percentile bootstrap
interval of it and scipy's two-sided Mann-Whitney p; the same figures scipy gives each pair
alone (tests/test_compare.py holds them to scipy's), without a call into scipy per pair, which
made a sweep of 20,000 results take minutes.

Every pair's bootstrap is seeded alike (farm.comparisons.SEED), so pairs of the same sizes draw
the same resamples: they are drawn once, as scipy draws them (_resamples). A median depends only
on how often each value was drawn, so each pair's resampled medians are read off its sorted values
by counting (_medians), and the interval off them as scipy reads it (_percentiles).
"""
from __future__ import annotations

import functools
import math

CHUNK = 4_000_000  # figures per resample held at once, each side (32 MB)


def ratio_of_medians(pairs: list[tuple[list[float], list[float]]], resamples: int,
                     confidence: float, seed: int) -> list[tuple]:
    """(ratio of medians, its interval's low and high, Mann-Whitney p) of each pair's second
    sample against its first; Nones where either has fewer than 2 values."""
    import numpy as np

    found: list[tuple] = [(None, None, None, None)] * len(pairs)
    sizes: dict[tuple[int, int], list[int]] = {}
    for i, (base, other) in enumerate(pairs):
        if len(base) >= 2 and len(other) >= 2:
            sizes.setdefault((len(base), len(other)), []).append(i)
    for (n, m), members in sizes.items():
        base_draws, other_draws = _resamples(n, m, resamples, seed)
        distinct = max(base_draws[0].shape[1], other_draws[0].shape[1])
        step = max(1, CHUNK // (2 * resamples + distinct))
        # room for both sides' resampled medians, used again by each chunk: fresh memory, each
        # page zeroed by the kernel where first written, cost as much as the figures put in it
        room = np.empty((2, min(step, len(members)), resamples))
        for at in range(0, len(members), step):
            chunk = members[at:at + step]
            base = np.array([pairs[i][0] for i in chunk], float)
            other = np.array([pairs[i][1] for i in chunk], float)
            distribution = _medians(other, other_draws, room[0, :len(chunk)])
            distribution /= _medians(base, base_draws, room[1, :len(chunk)])
            low, high = _percentiles(distribution, confidence)
            p_values = _mann_whitney(other, base)
            ratios = np.median(other, axis=-1) / np.median(base, axis=-1)
            for k, i in enumerate(chunk):
                found[i] = (float(ratios[k]), _finite(low[k]), _finite(high[k]),
                            _finite(p_values[k]))
    return found


def _resamples(n: int, m: int, resamples: int, seed: int) -> tuple:
    """The resamples scipy's bootstrap draws for samples of n and m values with this seed, per
    side: the distinct resamples as counts (how often each value was drawn; by value, then
    resample) and which of them each draw is. scipy draws each sample's indices in turn from
    one generator, rng.integers(0, size, (resamples, size)); tests/test_compare.py holds the
    figures to scipy's own."""
    return _first_drawn(n, resamples, seed)[0], _second_drawn(n, m, resamples, seed)


@functools.lru_cache(maxsize=64)
def _first_drawn(n: int, resamples: int, seed: int) -> tuple:
    """The first sample's resamples, and the generator's state after them (the second's are
    drawn from there: one first draw serves every size of second sample)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return _counted(rng.integers(0, n, (resamples, n)), n, resamples), rng.bit_generator.state


@functools.lru_cache(maxsize=16)
def _second_drawn(n: int, m: int, resamples: int, seed: int) -> tuple:
    import numpy as np

    rng = np.random.default_rng(seed)
    rng.bit_generator.state = _first_drawn(n, resamples, seed)[1]
    return _counted(rng.integers(0, m, (resamples, m)), m, resamples)


def _counted(indices, size: int, resamples: int) -> tuple:
    """Resamples (rows of indices) as (counts by value and distinct resample, which distinct
    resample each row is)."""
    import numpy as np

    counts = np.bincount((np.arange(resamples)[:, None] * size + indices).ravel(),
                         minlength=resamples * size).reshape(resamples, size)
    few = math.comb(2 * size - 1, size) < 100 * resamples  # few possible: many drawn twice
    if few and (size + 1) ** size < 2 ** 63:
        # each row as one number, its counts the digits (first the most significant): the
        # distinct rows come out in np.unique(counts, axis=0)'s order, in a tenth of its time
        codes = counts @ (size + 1) ** np.arange(size - 1, -1, -1)
        _, first, which = np.unique(codes, return_index=True, return_inverse=True)
        counts = counts[first]
    else:
        which = np.arange(resamples)
    kind = np.int16 if size < 2 ** 15 else np.int32
    return np.ascontiguousarray(counts.T, dtype=kind), which.reshape(-1)


def _medians(values, draws, out):
    """Each row's median over each resample (into out: rows of values, by resample), as numpy's
    median of the resampled values gives it: the middle order statistic, or the two middle
    ones' sum halved. The k-th smallest value of a resample is the first of the sorted values
    at which its running count of draws passes k; the counts run over every row and resample
    at once, a sorted value at a time."""
    import numpy as np

    counts, which = draws
    n = values.shape[-1]
    order = np.argsort(values, axis=-1)
    ordered = np.take_along_axis(values, order, axis=-1)
    running = np.zeros((len(values), counts.shape[1]), counts.dtype)
    low, high = np.zeros_like(running), np.zeros_like(running)
    for i in range(n):
        running += np.take(counts, order[:, i], axis=0)
        low += running <= (n - 1) // 2
        high += running <= n // 2
        if i % 4 == 3 and running.min() > n // 2:  # every median found: nothing more to add
            break
    medians = (np.take_along_axis(ordered, low.astype(np.intp), axis=-1)
               + np.take_along_axis(ordered, high.astype(np.intp), axis=-1)) / 2
    return np.take(medians, which, axis=-1, out=out, mode="clip")  # "raise" copies out


def _percentiles(distribution, confidence: float):
    """The percentile interval of each row of a bootstrap distribution (rows: pairs), as
    scipy's bootstrap reads it: scipy.stats.quantile's default (linear: Hyndman and Fan's 7th)
    at alpha and 1 - alpha, each from the two order statistics it lies between, found by
    partitioning the rows (in place) rather than sorting them."""
    import numpy as np

    size = distribution.shape[-1]
    alpha = (1 - confidence) / 2
    between = []  # per bound: the order statistics it lies between (0-based), and its weight
    for p in (alpha, 1 - alpha):
        at = p * float(size) + (1 - p)  # 1-based, between the order statistics j + 1 and j + 2
        j = int(min(max(at // 1 - 1, 0), size - 1))
        above = int(min(max(at // 1, 0), size - 1))
        between.append((j, above, 0.0 if at // 1 - 1 < 0 else at % 1))
    # one partition puts all four in place: each later rank is selected among fewer figures
    # (a third less time than a partition per bound and a max below it)
    ranks = sorted({rank for j, above, _ in between for rank in (j, above)})
    distribution.partition(ranks, axis=-1)
    found = [(1 - g) * distribution[:, j] + g * distribution[:, above] for j, above, g in between]
    # a NaN sorts last, so past the last rank partitioned, if a row has one
    missing = np.isnan(distribution[:, ranks[-1]:]).any(axis=-1)
    return tuple(np.where(missing, np.nan, value) for value in found)


def _mann_whitney(other, base):
    """scipy's two-sided Mann-Whitney p (scipy.stats.mannwhitneyu, method "auto") of each row
    of other against base's, worked out as scipy works it out, without importing scipy.stats
    (most of a second, on every `farm compare` and `farm report`): the exact distribution of
    U where either sample has 8 values or fewer and the row has no ties, else the normal
    approximation with its tie and continuity corrections. tests/test_compare.py holds the
    figures to scipy's own, to the bit. scipy.special (a quarter of a second to import) only
    where a row needs the normal approximation: a sweep's jobs compared by their few repeats,
    measured latencies without ties, are exact."""
    import numpy as np

    n1, n2 = other.shape[-1], base.shape[-1]
    ranks, ties = _ranks(np.concatenate([other, base], axis=-1))
    u1 = np.sum(ranks[..., :n1], axis=-1) - n1 * (n1 + 1) / 2
    u = np.maximum(u1, n1 * n2 - u1)
    tied = (ties > 1).any(axis=-1)
    exact = ~tied if min(n1, n2) <= 8 else np.zeros(len(u), bool)
    p_values = np.empty(len(u))
    if exact.any():
        p_values[exact] = _exact_sf(u[exact].astype(np.int64), n1, n2)
    if (~exact).any():
        n = n1 + n2
        tie_term = np.sum(ties[~exact] ** 3 - ties[~exact], axis=-1)
        spread = np.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
        numerator = u[~exact] - n1 * n2 / 2
        numerator -= 0.5  # continuity, as scipy: the p-value is the SF at U less a half
        from scipy import special
        with np.errstate(divide="ignore", invalid="ignore"):
            p_values[~exact] = special.ndtr(-(numerator / spread))
    return np.clip(p_values * 2, 0.0, 1.0)


def _ranks(values):
    """Average ranks along the last axis, and the tie counts in sorted order (scipy.stats'
    _rankdata(..., 'average', return_ties=True))."""
    import numpy as np

    shape = values.shape
    order = np.argsort(values, axis=-1, kind="stable")
    ordinal = np.broadcast_to(np.arange(1, shape[-1] + 1, dtype=float), shape)
    ordered = np.take_along_axis(values, order, axis=-1)
    first = np.concatenate([np.ones(shape[:-1] + (1,), dtype=bool),
                            ordered[..., :-1] != ordered[..., 1:]], axis=-1)
    starts = np.arange(ordered.size)[first.reshape(-1)]
    counts = np.diff(starts, append=np.asarray([ordered.size], dtype=starts.dtype))
    average = np.repeat(ordinal[first] + (counts.astype(float) - 1) / 2, counts).reshape(shape)
    ranks = np.empty_like(average)
    np.put_along_axis(ranks, order, average, axis=-1)
    ties = np.zeros(shape, dtype=np.float64)
    ties[first] = counts
    return ranks, ties


def _exact_sf(u, n1: int, n2: int):
    """P(U >= u) under the null for samples of n1 and n2 values without ties, by scipy's own
    recurrence (scipy.stats._mannwhitneyu._MWU.sf: the counts of arrangements giving each U,
    Andreas Löffler's formula, in integers while they fit)."""
    import numpy as np

    n1, n2 = min(n1, n2), max(n1, n2)
    complement = np.asarray(n1 * n2 - u)
    lower = u < complement
    complement[lower] = u[lower]
    pmf = _u_frequencies(n1, n2, int(np.max(complement)))
    found = np.asarray(np.cumsum(pmf)[complement])
    if np.any(lower):
        found[lower] = 1.0 - found[lower] + pmf[complement[lower]]
    return found


def _u_frequencies(n1: int, n2: int, most: int):
    """The null distribution of U from 0 to most (n1 <= n2, most <= n1 * n2 / 2)."""
    import numpy as np

    sigma = np.zeros(most + 1, dtype=int)
    for d in np.arange(1, n1 + 1):
        sigma[np.arange(d, most + 1, d)] += d
    for d in np.arange(n2 + 1, n2 + n1 + 1):
        sigma[np.arange(d, most + 1, d)] -= d
    sigma = sigma[1:]
    counts = np.zeros(most + 1, dtype=np.uint64)
    counts_are_ints, largest = True, np.iinfo(np.uint64).max
    counts[0] = 1
    for u in np.arange(1, most + 1):
        value = np.dot(counts[:u], sigma[u - 1::-1]) / u
        if value > largest and counts_are_ints:  # past uint64: floats from here, as scipy
            counts, counts_are_ints = counts.astype(float), False
        counts[u] = value
    return counts / _binomial(n1 + n2, n1)


def _binomial(n: int, k: int) -> float:
    """n choose k as the float scipy.special.binom gives for whole n >= k >= 0: its product of
    k (or n - k, the fewer) factors in the order it takes them, which is not always the float
    nearest the true count (math.comb's). tests/test_compare.py holds it to scipy's."""
    k = min(k, n - k)
    if k >= 20:  # scipy goes by its beta function from here; a sample of 8 never gets here
        from scipy import special
        return float(special.binom(n, k))
    numerator = denominator = 1.0
    for i in range(1, k + 1):
        numerator *= i + float(n) - k
        denominator *= i
        if abs(numerator) > 1e50:
            numerator /= denominator
            denominator = 1.0
    return numerator / denominator


def _finite(value) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
