"""Timing and memory, measured inside the agent's process.

Latency: warm-up calls, then timed calls until BOTH a minimum count and a minimum duration are
met. Process memory: the kernel's own high-water mark (VmHWM), reset before each job by writing 5
to /proc/self/clear_refs, so that a job's figure is never inflated by an earlier one.
"""
import ctypes
import gc
import math
import time


def time_calls(call, warmup, min_iters, min_seconds, on_phase=None):
    for _ in range(warmup):
        call()
    if on_phase:
        on_phase("timing")
    latencies = []
    clock = time.perf_counter
    started = clock()
    while len(latencies) < min_iters or clock() - started < min_seconds:
        t0 = clock()
        call()
        latencies.append(clock() - t0)
    return latencies, clock() - started


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
    return {
        "iters": n, "window_s": window_s,
        "p50_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90),
        "p95_ms": percentile(ms, 95), "p99_ms": percentile(ms, 99),
        "mean_ms": mean, "stdev_ms": stdev, "min_ms": ms[0], "max_ms": ms[-1],
        "per_sample_ms": mean / batch_size,
        "throughput": batch_size * n / (sum(ms) / 1000.0),
    }


def _status_kib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (IOError, OSError):
        pass
    return None


def process_peak_mb():
    kib = _status_kib("VmHWM")
    return kib / 1024.0 if kib is not None else None


def release_memory():
    """Give freed heap back to the kernel, so that resident memory is live memory only."""
    gc.collect()
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


def count_flops(model, inputs):
    """FLOPs of one forward pass by torch's own counter; None where this torch has no counter."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    import torch

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(**inputs)
    return int(counter.get_total_flops())
