"""Reports over a sweep's results: Pareto fronts, latency and memory charts per device; per pool
of devices, early exit's curves and each method's speed-up against what it saves; and one
self-contained HTML page that shows them with a table of every job.

Everything here is a pure function of result rows (dicts with v_results' columns); nothing reads
the database. A figure that was not measured is None: it is never plotted and never invented. A
row without it is left out of that chart and still appears in the table. Only jobs that ended
`done` are points; `oom` jobs show in the memory chart at the device's limit.

Each chart's data comes from a small function (`front_points`, `latency_series`, `memory_bars`;
the methods' charts: farm/method_charts.py) that the tests check; the drawing around it only draws.
"""
from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path

# No pyplot: it keeps every figure in a process-wide registry until plt.close, and choosing its
# backend would change it for the whole process. A bare Figure on an Agg canvas renders without
# a display and is freed like any other object once the chart is written.
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from farm.results import Status, label

DEVICE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
X_LABELS = {"per_sample_ms": "latency per sample (ms)", "peak_mem_mb": "peak memory (MiB)"}
NO_ACCURACY = "GFLOP per sample (no accuracy measured)"
FRONT_COLOUR = "tab:red"
OOM_COLOUR = "tab:red"
# A log axis only pays off once batch sizes spread wider than this (1..8 reads fine as is).
LOG_BATCH_SPAN = 8


def pareto_front(points: list[dict], x: str, y: str, maximize_y: bool = True) -> list[dict]:
    """The points no other point beats: smaller x is better, and larger y (or smaller, when
    maximize_y is False). Points missing x or y are left out. Of points equal on both axes the
    first one given is kept. Sorted by x."""
    def better_y(value: float) -> float:
        return -value if maximize_y else value

    measured = [p for p in points if p.get(x) is not None and p.get(y) is not None]
    # Best first: by x, then by y; a stable sort keeps ties in the order they were given.
    measured.sort(key=lambda p: (p[x], better_y(p[y])))
    front: list[dict] = []
    for point in measured:
        # Every point already kept has x no larger, so this one stays only if its y is better.
        if not front or better_y(point[y]) < better_y(front[-1][y]):
            front.append(point)
    return front


def done_on(rows: list[dict], device: str) -> list[dict]:
    return [r for r in rows if r.get("device") == device and r.get("status") == Status.DONE]


def y_column(rows: list[dict]) -> str:
    """What a front's y axis shows: the score where any job has one; else FLOPs per sample, the
    one measure of how much a model computes that every job has."""
    return "score" if any(r.get("score") is not None for r in rows) else "flops"


def y_value(row: dict, column: str) -> float:
    return row[column] / 1e9 if column == "flops" else row[column]


def front_points(rows: list[dict], device: str, x: str) -> list[dict]:
    """The jobs on the device's Pareto front for x (`per_sample_ms` or `peak_mem_mb`)."""
    done = done_on(rows, device)
    return pareto_front(done, x, y_column(done), maximize_y=True)


def varying(rows: list[dict]) -> list[str]:
    """Task and sequence length go into labels only when the rows differ in them."""
    return [c for c in ("task", "seq_len") if len({r.get(c) for r in rows}) > 1]


def series_name(row: dict, differing: list[str]) -> str:
    extra = [f"s{row['seq_len']}" if c == "seq_len" else str(row[c]) for c in differing]
    return " ".join([row["model"], row["variant"], *extra])


def point_label(row: dict, differing: list[str]) -> str:
    return f"{series_name(row, differing)} b{row['batch_size']}"


def latency_series(rows: list[dict], device: str) -> dict[str, list[tuple[int, float]]]:
    """Per model and variant on the device: (batch size, ms per sample), by batch size."""
    done = [r for r in done_on(rows, device)
            if r.get("per_sample_ms") is not None and r.get("batch_size") is not None]
    differing = varying(done)
    series: dict[str, list[tuple[int, float]]] = {}
    for r in done:
        series.setdefault(series_name(r, differing), []).append((r["batch_size"],
                                                                 r["per_sample_ms"]))
    return {name: sorted(points) for name, points in sorted(series.items())}


def memory_limit(rows: list[dict], device: str) -> float | None:
    limits = [r["memory_limit_mb"] for r in rows
              if r.get("device") == device and r.get("memory_limit_mb") is not None]
    return max(limits) if limits else None


def memory_bars(rows: list[dict], device: str) -> dict[str, dict]:
    """Per model and variant on the device with a measured peak or an oom job: `peak`, the
    largest peak over its done jobs (None if none was measured); `had_oom`, whether any of its
    jobs ended oom; and `oom`, that bar's height: the device's memory limit, else the largest
    peak an oom job recorded, else None."""
    limit = memory_limit(rows, device)
    bars: dict[str, dict] = {}
    for r in rows:
        peak = r.get("peak_mem_mb")
        shown = r.get("status") == Status.OOM or (
            r.get("status") == Status.DONE and peak is not None)
        if r.get("device") != device or not shown:
            continue
        bar = bars.setdefault(f"{r['model']} {r['variant']}",
                              {"peak": None, "oom": None, "had_oom": False})
        if r["status"] == Status.DONE:
            bar["peak"] = max(bar["peak"] or 0.0, peak)
        else:
            bar["had_oom"] = True
            height = limit if limit is not None else peak
            if height is not None:
                bar["oom"] = max(bar["oom"] or 0.0, height)
    return dict(sorted(bars.items()))


def draw_front(ax: Axes, rows: list[dict], device: str, x: str) -> None:
    done = done_on(rows, device)
    y = y_column(done)
    points = [r for r in done if r.get(x) is not None and r.get(y) is not None]
    front = pareto_front(done, x, y, maximize_y=True)
    ax.set_xlabel(X_LABELS[x])
    ax.set_ylabel(score_label(done) if y == "score" else NO_ACCURACY)
    if not points:
        note_nothing(ax)
        return
    ax.scatter([r[x] for r in points], [y_value(r, y) for r in points], color="tab:gray",
               label="measured")
    fx, fy = [r[x] for r in front], [y_value(r, y) for r in front]
    # A step: at any x, the best y reachable is that of the last front point left of it.
    ax.step(fx, fy, where="post", color=FRONT_COLOUR, linewidth=2, label="Pareto front")
    ax.scatter(fx, fy, marker="D", s=60, color=FRONT_COLOUR, zorder=3)
    differing = varying(points)
    for r in points:
        ax.annotate(point_label(r, differing), (r[x], y_value(r, y)), xytext=(4, 4),
                    textcoords="offset points", fontsize=7)
    legend(ax)


def score_label(rows: list[dict]) -> str:
    metrics = sorted({r["metric"] for r in rows if r.get("score") is not None and r.get("metric")})
    return f"score ({', '.join(metrics)})" if metrics else "score"


def draw_latency_by_batch(ax: Axes, rows: list[dict], device: str) -> None:
    series = latency_series(rows, device)
    ax.set_xlabel("batch size")
    ax.set_ylabel(X_LABELS["per_sample_ms"])
    if not series:
        note_nothing(ax)
        return
    for name, points in series.items():
        ax.plot([b for b, _ in points], [ms for _, ms in points], marker="o", label=name)
    batches = sorted({b for points in series.values() for b, _ in points})
    if batches[-1] / batches[0] > LOG_BATCH_SPAN:
        ax.set_xscale("log", base=2)
    ax.set_xticks(batches, labels=[str(b) for b in batches])
    ax.minorticks_off()
    legend(ax)


def draw_memory(ax: Axes, rows: list[dict], device: str) -> None:
    bars = memory_bars(rows, device)
    limit = memory_limit(rows, device)
    ax.set_ylabel("peak memory (MiB), max over jobs")
    if not bars:
        note_nothing(ax)
        return
    names = list(bars)
    # Two slots per model and variant: its measured peak on the left, its oom bar on the right.
    done = [(i - 0.2, b["peak"]) for i, b in enumerate(bars.values()) if b["peak"] is not None]
    oom = [(i + 0.2, b["oom"]) for i, b in enumerate(bars.values()) if b["oom"] is not None]
    if done:
        ax.bar(*zip(*done), width=0.4, color="tab:blue", label="peak (done)")
    if oom:
        ax.bar(*zip(*oom), width=0.4, color="none", edgecolor=OOM_COLOUR, hatch="//",
               label="oom (at the limit)" if limit is not None else "oom (its peak)")
    for i, b in enumerate(bars.values()):
        if b["had_oom"]:
            # With no limit and no peak there is no height to draw, only the fact.
            text = "oom" if b["oom"] is not None else "oom\n(no limit known)"
            ax.text(i + 0.2, b["oom"] or 0.0, text, ha="center", va="bottom",
                    color=OOM_COLOUR, fontsize=8)
    if limit is not None:
        ax.axhline(limit, color=OOM_COLOUR, linestyle="--", label=f"limit {limit:.0f} MiB")
    ax.set_xticks(range(len(names)), labels=names, rotation=30, ha="right", fontsize=8)
    legend(ax)


def legend(ax: Axes) -> None:
    # A chart with only unlabelled marks (an oom with no height) needs no legend.
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)


def note_nothing(ax: Axes) -> None:
    ax.text(0.5, 0.5, "nothing measured", ha="center", va="center", transform=ax.transAxes,
            color="tab:gray")


# File suffix, caption, and how to draw it; the order is the order of the page and of the paths.
CHARTS: tuple[tuple[str, str, Callable[[Axes, list[dict], str], None]], ...] = (
    ("front-latency", "Pareto front: latency per sample",
     lambda ax, rows, device: draw_front(ax, rows, device, "per_sample_ms")),
    ("front-memory", "Pareto front: peak memory",
     lambda ax, rows, device: draw_front(ax, rows, device, "peak_mem_mb")),
    ("latency-batch", "latency per sample by batch size", draw_latency_by_batch),
    ("memory", "peak memory per model and variant", draw_memory),
)


def draw_exit_curves(ax: Axes, rows: list[dict], pool: str, x: str) -> None:
    """Score against per-example cost in one pool of devices: a line per early-exit model across
    its thresholds (farm.exits), the static variants as points, and the Pareto front over all of
    them."""
    from farm.exits import exit_curves, static_points

    curves, static = exit_curves(rows, pool, x), static_points(rows, pool, x)
    scale = 1e9 if x == "flops" else 1.0
    ax.set_xlabel("GFLOP per example" if x == "flops" else "latency per example (ms)")
    ax.set_ylabel(score_label([p["row"] for c in curves.values() for p in c] +
                              [p["row"] for p in static]))
    if not curves and not static:
        note_nothing(ax)
        return
    for name, points in curves.items():
        ax.plot([p["x"] / scale for p in points], [p["y"] for p in points], marker="o",
                label=name)
        for p in points:
            ax.annotate(f"{p['value']:g}", (p["x"] / scale, p["y"]), xytext=(3, -9),
                        textcoords="offset points", fontsize=7)
    if static:
        ax.scatter([p["x"] / scale for p in static], [p["y"] for p in static], marker="s",
                   color="tab:gray", label="static variants")
        for p in static:
            ax.annotate(p["row"]["variant"], (p["x"] / scale, p["y"]), xytext=(4, 4),
                        textcoords="offset points", fontsize=7)
    front = pareto_front([p for c in curves.values() for p in c] + static, "x", "y")
    ax.step([p["x"] / scale for p in front], [p["y"] for p in front], where="post",
            color=FRONT_COLOUR, linewidth=1, linestyle="--", label="Pareto front")
    legend(ax)


# Per pool of devices (the sweep's target), where it ran early-exit jobs; files pool-<name>-*.
EXIT_CHARTS: tuple[tuple[str, str, Callable[[Axes, list[dict], str], None]], ...] = (
    ("exit-latency", "early exit: score against measured latency per example",
     lambda ax, rows, pool: draw_exit_curves(ax, rows, pool, "ms")),
    ("exit-flops", "early exit: score against FLOPs per example",
     lambda ax, rows, pool: draw_exit_curves(ax, rows, pool, "flops")),
)
POOL = "pool-"

def chart_file(name: str, suffix: str) -> str:
    return f"{name}-{suffix}.png"


def write_charts(rows: list[dict], name: str, out_dir: Path, title: str,
                 charts: tuple = CHARTS, file_name: str | None = None,
                 heading: str | None = None) -> list[Path]:
    """`charts` of one device (or, with EXIT_CHARTS, one pool) as PNG files in out_dir."""
    paths = []
    for suffix, caption, draw in charts:
        fig = Figure(figsize=(8, 5.5), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        # The title first: a chart that places labels by measuring needs the final layout.
        ax.set_title(f"{title}: {heading or name}\n{caption}", fontsize=10)
        draw(ax, rows, name)
        path = out_dir / chart_file(file_name or name, suffix)
        fig.savefig(path, dpi=100)
        paths.append(path)
    return paths


ALL_DEVICES = "*"  # the target of a sweep that names no devices: every device of the inventory


def exit_pools(rows: list[dict]) -> list[str]:
    """The pools (targets) that ran early-exit jobs, their file names checked to be safe."""
    from farm.exits import is_exit

    pools = sorted({r["target"] for r in rows if is_exit(r) and r.get("target")})
    _file_safe([pool_file(pool) for pool in pools], "pool")
    return pools


def pool_sections(rows: list[dict]) -> list[tuple[str, tuple, str]]:
    """(pool, its charts, its heading): the pools with early exits, then those with methods."""
    from farm.method_charts import METHOD_CHARTS, method_pools

    return ([(pool, EXIT_CHARTS, f"{pool_name(pool)}: early exit") for pool in exit_pools(rows)]
            + [(pool, METHOD_CHARTS, f"{pool_name(pool)}: methods against fp32")
               for pool in method_pools(rows)])


def pool_file(pool: str) -> str:
    return POOL + ("all" if pool == ALL_DEVICES else pool)


def pool_name(pool: str) -> str:
    return "all devices" if pool == ALL_DEVICES else f"pool {pool}"


def devices(rows: list[dict]) -> list[str]:
    """Devices that ran jobs, checked to be safe as file names; queued jobs may have none yet."""
    return _file_safe(sorted({r["device"] for r in rows if r.get("device") is not None}),
                      "device")


def _file_safe(names: list[str], what: str) -> list[str]:
    for name in names:
        if not DEVICE_NAME.fullmatch(name):
            raise ValueError(f"{what} name {name!r} cannot name a chart file: "
                             "use letters, digits, '.', '_' and '-'")
    return names


def write_report(rows: list[dict], out_dir: Path, title: str,
                 differences: list[dict] = ()) -> list[Path]:
    """Write four charts per device, the early-exit and method charts per pool, and index.html
    into out_dir; return their paths, the charts first. `differences`: `farm compare`'s records
    of each variant against fp32 (farm.console.difference_records), shown with the
    non-significant ones marked ~."""
    if not rows:
        raise ValueError("no results to report")
    names = devices(rows)
    sections = pool_sections(rows)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = [path for device in names for path in write_charts(rows, device, out_dir, title)]
    charts += [path for pool, kinds, heading in sections for path in write_charts(
        rows, pool, out_dir, title, kinds, pool_file(pool), heading)]
    page = out_dir / "index.html"
    page.write_text(render_page(rows, names, title, sections, differences), encoding="utf-8")
    return [*charts, page]


TABLE_HEADERS = tuple(map(label, (
    "model", "variant", "task", "batch_size", "seq_len", "device", "status", "p50_ms",
    "per_sample_ms", "peak_mem_mb", "flops", "params", "score")))
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; max-width: 48%; } figure img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #555; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.done td.status { color: #080; } tr.oom td.status, tr.failed td.status,
tr.timeout td.status { color: #b00; }
tr.faster td { color: #080; } tr.slower td { color: #b00; } tr.ns td.n { color: #999; }
"""


def number(value, fmt: str, scale: float = 1.0) -> str:
    return "" if value is None else format(value / scale, fmt)


def table_row(r: dict) -> str:
    text = [r.get("model"), r.get("variant"), r.get("task"), r.get("batch_size"),
            r.get("seq_len"), r.get("device")]
    figures = [number(r.get("p50_ms"), ".2f"), number(r.get("per_sample_ms"), ".2f"),
               number(r.get("peak_mem_mb"), ".0f"), number(r.get("flops"), ".3f", 1e9),
               number(r.get("params"), ".2f", 1e6), number(r.get("score"), ".4g")]
    status = html.escape(str(r.get("status") or ""))
    cells = [f"<td>{esc(v)}</td>" for v in text]
    # The error goes in a tooltip: it can be long, and the status says enough at a glance.
    cells.append(f'<td class="status" title="{esc(r.get("error"))}">{status}</td>')
    cells += [f'<td class="n">{v}</td>' for v in figures]
    return f'<tr class="{status}">{"".join(cells)}</tr>'


def esc(value) -> str:
    return "" if value is None else html.escape(str(value), quote=True)


def device_section(device: str, charts: tuple = CHARTS, file_name: str | None = None,
                   heading: str | None = None) -> str:
    figures = "".join(
        f'<figure><img src="{esc(chart_file(file_name or device, suffix))}" '
        f'alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'
        for suffix, caption, _ in charts)
    return (f'<section><h2>{esc(heading or device)}</h2><div class="charts">{figures}</div>'
            "</section>")


COMPARED_HEADERS = ("model", "task", "batch", "seq", "variant", "time / fp32's",
                    "95% interval", "p", "verdict", "from")
NOT_SIGNIFICANT = ("~: no significant difference (Mann-Whitney p ≥ 0.05, the 95% bootstrap "
                   "interval of the ratio of medians holds 1, or the ratio is within the "
                   "smallest change worth reporting); its ratio is shown grey, not as a finding")


def compared_section(differences: list[dict]) -> str:
    """Each variant's time against fp32's on the same work, as `farm compare` judges it."""
    if not differences:
        return ""
    head = "".join(f"<th>{esc(h)}</th>" for h in COMPARED_HEADERS)
    lines = []
    for d in differences:
        faint = d["verdict"] not in ("faster", "slower")
        interval = (f"{d['ratio_low']:.3f}–{d['ratio_high']:.3f}"
                    if d["ratio_low"] is not None and d["ratio_high"] is not None else "")
        source = (f"{d['baseline_repeats']} / {d['other_repeats']} repeats"
                  if d["between"] == "repeats" else
                  f"{d['baseline_calls']} / {d['other_calls']} calls")
        cells = [esc(d["model"]), esc(d["task"]), esc(d["batch_size"]), esc(d["seq_len"]),
                 esc(d["other"])]
        figures = [number(d["ratio"], ".3f"), interval, number(d["p_value"], ".3g"),
                   esc(d["verdict"]), source]
        lines.append(f'<tr class="{"ns" if faint else esc(d["verdict"])}">'
                     + "".join(f"<td>{c}</td>" for c in cells)
                     + "".join(f'<td class="n">{f}</td>' for f in figures) + "</tr>")
    return (f"<h2>Against fp32</h2>\n<table><thead><tr>{head}</tr></thead><tbody>\n"
            + "\n".join(lines) + f"\n</tbody></table>\n<p>{esc(NOT_SIGNIFICANT)}.</p>\n")


def render_page(rows: list[dict], names: list[str], title: str,
                pools: list[tuple[str, tuple, str]] = (), differences: list[dict] = ()) -> str:
    """One page with nothing outside it but the charts beside it: inline CSS, no scripts.
    `pools`: pool_sections()."""
    sections = "\n".join([device_section(device) for device in names] + [
        device_section(pool, kinds, pool_file(pool), heading) for pool, kinds, heading in pools])
    head = "".join(f"<th>{esc(h)}</th>" for h in TABLE_HEADERS)
    body = "\n".join(table_row(r) for r in rows)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
            f"<h1>{esc(title)}</h1>\n{sections}\n{compared_section(differences)}"
            "<h2>All jobs</h2>\n"
            f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>\n"
            "</body></html>\n")
