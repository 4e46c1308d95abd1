"""Charts of each method against eager fp32, per pool of devices (farm report): measured
speed-up against the FLOPs and the parameters a variant saves, with the diagonal where time
would follow the saving. Does a method's saving in FLOPs or parameters become time?

`method_points` is the data the tests check; the drawing around it only draws.
"""
from __future__ import annotations

import math
from statistics import median

from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from farm.charts import Chart, legend_outside, note_nothing, place_labels
from farm.results import Status

PLAIN = "precision / execution"  # the family of a variant without methods (int8, fp16, stream)
MARKERS = "osD^vPX*"
# The saving each chart sets time against: (what is reduced, what is counted).
REDUCTIONS = {"flops_reduction": ("FLOPs", "FLOPs"),
              "params_reduction": ("parameter", "parameters")}


def pool_comparisons(rows: list[dict], pool: str) -> list:
    """compare() within the pool (a baseline of another pool ran on other hardware), each result
    against the baseline's same repeat on its device where that finished, else against
    compare's own choice (the baseline on its device, else on another device of the pool)."""
    from farm.comparisons import compare

    in_pool = [r for r in rows if r.get("target") == pool]
    anywhere = {id(c.result): c for c in compare(in_pool)}
    repeats: dict = {}
    for r in in_pool:
        repeats.setdefault(r.get("repeat") or 1, []).append(r)
    return [c if c.baseline is not None and c.baseline["device"] == c.result["device"]
            else anywhere[id(c.result)] for group in repeats.values() for c in compare(group)]


def method_points(rows: list[dict], pool: str) -> list[dict]:
    """One point per model, variant, task, batch size and sequence length done in the pool
    against its eager fp32 baseline, early exits left out (they have charts of their own):
    `speedup` (the baseline's time per sample / the variant's), `flops_reduction` and
    `params_reduction` (the baseline's / the variant's), each the median over its pairs (its
    devices and repeats); `method`, the variant's first method (PLAIN where it has none);
    `devices`; `n`, its pairs. Sorted by model, variant and work."""
    from farm.comparisons import variant_of
    from farm.exits import is_exit

    groups: dict[tuple, list] = {}
    for c in pool_comparisons(rows, pool):
        r = c.result
        if r["status"] != Status.DONE or is_exit(r) or c.baseline is None or not all(
                (c.latency_ratio, c.flops_ratio, c.params_ratio)) or \
                c.variant.spec() == variant_of(c.baseline).spec():
            continue
        key = (r["model"], r["variant"], r["task"], r["batch_size"], r["seq_len"])
        groups.setdefault(key, []).append(c)
    return [{"model": model, "variant": variant, "task": task, "batch_size": batch,
             "seq_len": seq,
             "method": pairs[0].variant.methods[0][0] if pairs[0].variant.methods else PLAIN,
             "speedup": median(1 / c.latency_ratio for c in pairs),
             "flops_reduction": median(1 / c.flops_ratio for c in pairs),
             "params_reduction": median(1 / c.params_ratio for c in pairs),
             "devices": sorted({c.result["device"] for c in pairs}), "n": len(pairs)}
            for (model, variant, task, batch, seq), pairs in sorted(groups.items())]


def method_label(point: dict, points: list[dict], differing: list[str] | None = None) -> str:
    """The variant, with the model, task, sequence length and batch size where points differ
    (`differing`: those columns, where the caller labelling every point has them already)."""
    if differing is None:
        differing = method_differing(points)
    extra = {"seq_len": f"s{point['seq_len']}", "batch_size": f"b{point['batch_size']}"}
    return " ".join([point["model"]] * ("model" in differing) + [point["variant"]] +
                    [extra.get(c, str(point[c])) for c in differing if c != "model"])


def method_differing(points: list[dict]) -> list[str]:
    return [c for c in ("model", "task", "seq_len", "batch_size")
            if len({p[c] for p in points}) > 1]


def draw_methods(ax: Axes, points: list[dict], x: str) -> None:
    """Speed-up against the saving in x (points: method_points), log-log on equal ranges, so
    that the diagonal (the speed-up the saving would give if time followed it) runs at 45
    degrees."""
    saved, counted = REDUCTIONS[x]
    ax.set_xlabel(f"{saved} reduction (fp32's {counted} / the variant's)")
    ax.set_ylabel("measured speed-up (fp32's time per sample / the variant's)")
    if not points:
        note_nothing(ax)
        return
    lo, hi = ratio_range([p[x] for p in points] + [p["speedup"] for p in points])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=2))
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}×"))
        axis.set_minor_locator(NullLocator())
    ax.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal")
    ax.plot([lo, hi], [lo, hi], linestyle="--", linewidth=1, color="tab:gray", zorder=1)
    ax.axhline(1, linewidth=1, color="tab:gray", alpha=0.35, zorder=1)
    at = hi / 2 ** (0.08 * math.log2(hi / lo))
    ax.annotate(f"speed-up = {saved} reduction", (at, at), xytext=(-2, 2),
                textcoords="offset points", rotation=45, rotation_mode="anchor", ha="right",
                va="bottom", fontsize=8, color="tab:gray")
    ax.text(at, 1, "no speed-up", ha="right", va="bottom", fontsize=8, color="tab:gray",
            alpha=0.8)
    families = sorted({p["method"] for p in points})
    for i, family in enumerate(families):
        mine = [p for p in points if p["method"] == family]
        ax.scatter([p[x] for p in mine], [p["speedup"] for p in mine], s=40, zorder=3,
                   color=f"C{i % 10}", marker=MARKERS[i % len(MARKERS)], label=family)
    legend_outside(ax, "first method")
    # Labels keep off the diagonal and the no-speed-up line, which the reader reads them against.
    differing = method_differing(points)
    place_labels(ax, [(p[x], p["speedup"], method_label(p, points, differing)) for p in points],
                 [([lo, hi], [lo, hi]), ([lo, hi], [1, 1])])


def ratio_range(values: list[float]) -> tuple[float, float]:
    """Powers of 2 around the values and 1, a little clear of the outermost."""
    return (2 ** math.floor(math.log2(min(values + [1.0])) - 0.25),
            2 ** math.ceil(math.log2(max(values + [1.0])) + 0.25))


def method_charts() -> tuple[Chart, ...]:
    """The charts of a report, which share each pool's method_points: worked out once, not by
    each chart's test and drawing again (a pool of thousands of results compares them all)."""
    known: dict[tuple, tuple] = {}

    def points(rows: list[dict], pool: str) -> list[dict]:
        key = (id(rows), pool)
        if key not in known:  # rows held with them: their id stays theirs while cached
            known[key] = (rows, method_points(rows, pool))
        return known[key][1]

    def reduces(x: str):
        """Whether the chart of savings in x has something to show: a variant that saved some
        (int8 and streaming keep fp32's FLOPs and parameters; a chart of them all at 1x says
        nothing)."""
        return lambda rows, pool: any(abs(p[x] - 1) > 1e-9 for p in points(rows, pool))

    return (
        Chart("methods-flops", "speed-up against FLOPs reduction, medians over devices and "
              "repeats;\nbelow the diagonal: the method saved more FLOPs than time",
              lambda ax, rows, pool: draw_methods(ax, points(rows, pool), "flops_reduction"),
              reduces("flops_reduction")),
        Chart("methods-params", "speed-up against parameter reduction, medians over devices "
              "and repeats;\nbelow the diagonal: the method saved more parameters than time",
              lambda ax, rows, pool: draw_methods(ax, points(rows, pool), "params_reduction"),
              reduces("params_reduction")),
    )
