"""Timing and memory, measured inside the agent's process.

Latency: warm-up calls, then timed calls until BOTH a minimum count and a minimum duration are
met. Process memory: the kernel's own high-water mark (VmHWM), reset before each job by writing 5
to /proc/self/clear_refs, so that a job's figure is never inflated by an earlier one.
"""
import ctypes
import gc
import math
import time


def warm_up(call, count):
    for _ in range(count):
        call()


def time_calls(call, min_iters, min_seconds, max_seconds=None):
    """Timed calls until both min_iters and min_seconds are met, or max_seconds has passed:
    (latencies s, window s)."""
    latencies = []
    clock = time.perf_counter
    started = clock()
    while len(latencies) < min_iters or clock() - started < min_seconds:
        if max_seconds is not None and latencies and clock() - started >= max_seconds:
            break
        t0 = clock()
        call()
        latencies.append(clock() - t0)
    return latencies, clock() - started


def timed_window(settings):
    """(min_iters, min_seconds, max_seconds) of a job's measure settings. `percentile: q` asks
    for enough calls that the q-th percentile has its interval, within max_seconds."""
    min_iters = int(settings["min_iters"])
    if settings.get("percentile") is not None:
        min_iters = max(min_iters, calls_for(float(settings["percentile"])))
    max_seconds = settings.get("max_seconds")
    return min_iters, float(settings["min_seconds"]), \
        float(max_seconds) if max_seconds is not None else None


# Every stored percentile has a distribution-free 95% confidence interval from order
# statistics: the number of calls faster than the true q-th percentile is Binomial(n, q/100),
# so [x(l), x(u)] (sorted calls, 1-based) holds it with probability P(l <= K < u). Where no
# such ranks exist among n calls (p99 from 10 calls), the percentile is not reported.
CONFIDENCE = 0.95
PERCENTILES = (50, 90, 95, 99)
NOISY = 0.10  # torch.utils.benchmark warns when the interquartile range passes 10% of the median


def calls_for(q, confidence=CONFIDENCE):
    """The fewest calls whose q-th percentile has an interval: both the fastest call being
    above it and the slowest below it must be rarer than (1 - confidence) / 2."""
    tail, p = (1.0 - confidence) / 2.0, q / 100.0
    return int(max(math.ceil(math.log(tail) / math.log(p)),
                   math.ceil(math.log(tail) / math.log(1.0 - p))))


def percentile_ranks(n, q, confidence=CONFIDENCE):
    """(l, u), 1-based ranks of the order statistics that bound the q-th percentile of n calls
    with at least `confidence`, as tight as the binomial allows; None where n is too few."""
    if n < 1:
        return None
    p, tail = q / 100.0, (1.0 - confidence) / 2.0
    cdf, total = [], 0.0
    for k in range(n + 1):  # P(K <= k), K ~ Binomial(n, p), summed in log space
        total += math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) +
                          (k * math.log(p) if k else 0.0) +
                          ((n - k) * math.log(1.0 - p) if n - k else 0.0))
        cdf.append(min(total, 1.0))
    lows = [rank for rank in range(1, n + 1) if cdf[rank - 1] <= tail]  # P(K < l) <= tail
    highs = [rank for rank in range(1, n + 1) if 1.0 - cdf[rank - 1] <= tail]  # P(K >= u)
    if not lows or not highs:
        return None
    return lows[-1], highs[0]


def percentile(sorted_values, q):
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not sorted_values:
        return None
    rank = (len(sorted_values) - 1) * q / 100.0
    low, high = int(math.floor(rank)), int(math.ceil(rank))
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def summarize(latencies_s, batch_size, window_s):
    ms = sorted(x * 1000.0 for x in latencies_s)
    n = len(ms)
    mean = sum(ms) / n
    stdev = math.sqrt(sum((x - mean) ** 2 for x in ms) / (n - 1)) if n > 1 else 0.0
    result = {
        "iters": n, "window_s": window_s,
        "mean_ms": mean, "stdev_ms": stdev, "min_ms": ms[0], "max_ms": ms[-1],
        "per_sample_ms": mean / batch_size,
        "throughput": batch_size * n / (sum(ms) / 1000.0),
    }
    missing = []
    for q in PERCENTILES:
        ranks = percentile_ranks(n, q)
        if ranks is None:
            missing.append("p%d needs %d" % (q, calls_for(q)))
        result["p%d_ms" % q] = percentile(ms, q) if ranks else None
        result["p%d_low_ms" % q] = ms[ranks[0] - 1] if ranks else None
        result["p%d_high_ms" % q] = ms[ranks[1] - 1] if ranks else None
    result.update(noise_figures(ms))
    result["percentile_note"] = (
        "not reported, too few calls (%d) for a 95%% interval: %s; measure: {percentile: q} "
        "times enough" % (n, ", ".join(missing))) if missing else None
    return result


def noise(sorted_ms):
    """Interquartile range / median of sorted latencies; None for fewer than 2."""
    if len(sorted_ms) < 2:
        return None
    median = percentile(sorted_ms, 50)
    spread = percentile(sorted_ms, 75) - percentile(sorted_ms, 25)
    return spread / median if median > 0 else None


def noise_figures(sorted_ms):
    value = noise(sorted_ms)
    return {"noise": value, "noisy": None if value is None else int(value > NOISY)}


def proc_field(path, field):
    """The first number of a `field:` line of a /proc file (kB for status and meminfo)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (IOError, OSError, ValueError):
        pass
    return None


def _status_kib(field):
    return proc_field("/proc/self/status", field)


def process_peak_mb():
    kib = _status_kib("VmHWM")
    return kib / 1024.0 if kib is not None else None


def resident_mb():
    """The process's resident memory now (VmRSS)."""
    kib = _status_kib("VmRSS")
    return kib / 1024.0 if kib is not None else None


def storage_read_bytes():
    """Bytes this process has made the kernel fetch from storage (page-cache hits excluded)."""
    return proc_field("/proc/self/io", "read_bytes")


def release_memory(thorough=True):
    """Give freed heap back to the kernel, so that resident memory is live memory only.

    A full collection walks every object torch and transformers made (about 150 ms); a job's
    own garbage is young, so after a job the young generations are enough.
    """
    if thorough:
        gc.collect()
    else:
        gc.collect(1)
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_process_peak():
    """Restart the kernel's high-water mark (VmHWM) from the current resident size."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except (IOError, OSError):
        return False


def synchronized(call, device):
    """On CUDA a call returns before the GPU is done: wait for it, or the timing is a lie."""
    if device != "cuda":
        return call
    import torch

    def call_and_wait():
        out = call()
        torch.cuda.synchronize()
        return out
    return call_and_wait


def reset_cuda_peak(device):
    if device == "cuda":
        import torch
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def cuda_peak_mb(device):
    if device != "cuda":
        return None
    import torch
    return torch.cuda.max_memory_allocated() / 1048576.0
