"""Reports over a sweep's results, per pool of devices (the sweep's target: a pooled sweep spreads
its jobs over the pool's devices, so fp32 and its int8 may run on two of them; they belong on one
chart): Pareto fronts and peak memory; latency by batch size (farm/batch_charts.py), early
exit's curves (farm/exit_charts.py) and each method against fp32 (farm/method_charts.py); and
one self-contained HTML page (farm/report_page.py). Per device on request.

Everything here is a pure function of result rows (dicts with v_results' columns); nothing reads
the database. A figure that was not measured is None: it is never plotted and never invented. A
row without it is left out of that chart and still appears in the tables. Only jobs that ended
`done` are points; `oom` jobs show in the memory chart at the device's limit. A chart with
nothing to show is not written.

Each chart's data comes from a small function (`work_points`, `front_points`, `memory_bars`)
that the tests check; the drawing around it only draws.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from statistics import median

from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from farm.charts import (Chart, file_safe, legend_outside, place_labels, pool_file, pool_name,
                         write_chart)
from farm.results import Status, job_memory

LABELS = {"per_sample_ms": "latency per sample (ms)", "memory": "memory (MiB)"}
FRONT_COLOUR = "tab:red"
OOM_COLOUR = "tab:red"
# A log axis only pays off once values spread wider than these (1..8 reads fine as is).
LOG_BATCH_SPAN, LOG_SPAN = 8, 20
WORK = ("model", "variant", "task", "batch_size", "seq_len")
FIGURES = ("per_sample_ms", "memory", "score", "flops")
# kind: (x, y, whether more y is better); smaller x is always better.
FRONTS = {"front-latency": ("per_sample_ms", "score", True),
          "front-memory": ("memory", "score", True),
          "front-latency-memory": ("memory", "per_sample_ms", False)}


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


def in_pool(rows: list[dict], pool: str) -> list[dict]:
    return [r for r in rows if r.get("target") == pool]


def on_device(rows: list[dict], device: str) -> list[dict]:
    return [r for r in rows if r.get("device") == device]


def work_points(rows: list[dict]) -> list[dict]:
    """One point per model, variant, task, batch size and sequence length done in rows (one pool
    or one device): each of FIGURES the median over the jobs that measured it (the pool's devices
    and repeats), None where none did; `metric`, `devices` and `n`, its jobs. Sorted by WORK."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("status") == Status.DONE:
            groups.setdefault(tuple(r.get(k) for k in WORK), []).append(r)
    points = []
    for key, jobs in sorted(groups.items(), key=lambda g: [(v is None, v) for v in g[0]]):
        figures = {f: [v for v in (job_memory(j) if f == "memory" else j.get(f) for j in jobs)
                       if v is not None] for f in FIGURES}
        points.append({**dict(zip(WORK, key)),
                       **{f: median(v) if v else None for f, v in figures.items()},
                       "metric": next((j["metric"] for j in jobs if j.get("metric")), None),
                       "devices": sorted({j["device"] for j in jobs if j.get("device")}),
                       "n": len(jobs)})
    return points


def front_kinds(rows: list[dict]) -> list[str]:
    """Score against latency and against memory where any job has a score; else latency against
    memory, both lower is better (FLOPs are a cost, never a stand-in for a score)."""
    if any(r.get("score") is not None for r in rows):
        return ["front-latency", "front-memory"]
    return ["front-latency-memory"]


def front_points(rows: list[dict], kind: str) -> list[dict]:
    """The work_points on the Pareto front of kind (FRONTS) over rows of one task."""
    x, y, maximize_y = FRONTS[kind]
    return pareto_front(work_points(rows), x, y, maximize_y)


def varying(points: list[dict], columns=("task", "seq_len")) -> list[str]:
    """What goes into names: only the columns the points differ in."""
    return [c for c in columns if len({p.get(c) for p in points}) > 1]


def series_name(point: dict, differing: list[str]) -> str:
    """Model, variant and what differs, each a word of its own: `bert-tiny int8 s128 b8`."""
    extra = {"seq_len": "s", "batch_size": "b"}
    return " ".join([str(point["model"]), str(point["variant"]),
                     *(f"{extra.get(c, '')}{point[c]}" for c in differing)])


def point_label(point: dict, points: list[dict]) -> str:
    return series_name(point, varying(points, ("task", "seq_len", "batch_size")))


def memory_limit(rows: list[dict]) -> float | None:
    limits = [r["memory_limit_mb"] for r in rows if r.get("memory_limit_mb") is not None]
    return max(limits) if limits else None


def memory_bars(rows: list[dict]) -> dict[str, dict]:
    """Per model and variant with a measured peak or an oom job: `peak`, the largest peak over
    its done jobs (None if none was measured); `had_oom`, whether any of its jobs ended oom; and
    `oom`, that bar's height: the memory limit, else the largest peak an oom job recorded, else
    None."""
    limit = memory_limit(rows)
    bars: dict[str, dict] = {}
    for r in rows:
        peak = job_memory(r)
        if not (r.get("status") == Status.OOM or (r.get("status") == Status.DONE
                                                   and peak is not None)):
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


def has_memory(rows: list[dict], name: str = "") -> bool:
    """A memory chart needs a height: a measured peak, or an oom at a known limit."""
    return any(b["peak"] is not None or b["oom"] is not None for b in memory_bars(rows).values())


def of_task(task: str | None, rows: list[dict]) -> list[dict]:
    return rows if task is None else [r for r in rows if r.get("task") == task]


def score_label(rows: list[dict]) -> str:
    metrics = sorted({r["metric"] for r in rows if r.get("score") is not None and r.get("metric")})
    return f"score ({', '.join(metrics)})" if metrics else "score"


def log_if_spread(ax: Axes, axis: str, values: list[float], span: float = LOG_SPAN) -> None:
    """A log axis, with plain numbers on it, where values spread wider than span."""
    if values and min(values) > 0 and max(values) / min(values) > span:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        scale = ax.xaxis if axis == "x" else ax.yaxis
        scale.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        scale.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        scale.set_minor_locator(NullLocator())


def draw_front(ax: Axes, rows: list[dict], kind: str) -> None:
    x, y, maximize_y = FRONTS[kind]
    every = work_points(rows)
    points = [p for p in every if p[x] is not None and p[y] is not None]
    front = pareto_front(points, x, y, maximize_y)
    ax.set_xlabel(LABELS[x])
    ax.set_ylabel(score_label(points) if y == "score" else LABELS[y])
    ax.margins(0.08)
    log_if_spread(ax, "x", [p[x] for p in points])
    if y != "score":
        log_if_spread(ax, "y", [p[y] for p in points])
    on_front = {id(p) for p in front}
    rest = [p for p in points if id(p) not in on_front]
    if rest:
        ax.scatter([p[x] for p in rest], [p[y] for p in rest], color="tab:gray", s=25,
                   zorder=2, label="measured")
    # A step: at any x, the best y reachable is that of the last front point left of it.
    step = steps([p[x] for p in front], [p[y] for p in front])
    ax.plot(*step, color=FRONT_COLOUR, linewidth=1.5, zorder=2)
    ax.scatter([p[x] for p in front], [p[y] for p in front], marker="D", s=45,
               color=FRONT_COLOUR, zorder=3, label="Pareto front")
    missing = len(every) - len(points)
    legend_outside(ax)
    # The front's labels first: where labels must be left out, they are the others'.
    differing = varying(points, ("task", "seq_len", "batch_size"))  # point_label's, once
    place_labels(ax, [(p[x], p[y], series_name(p, differing)) for p in front + rest], [step],
                 f"not shown: {missing} without {'a score' if y == 'score' else 'both figures'}"
                 if missing else "")


def steps(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    """The corners of a step through the points, level until the next point's x."""
    sx, sy = xs[:1], ys[:1]
    for x, y in zip(xs[1:], ys[1:]):
        sx += [x, x]
        sy += [sy[-1], y]
    return sx, sy


def has_front(kind: str, task: str | None):
    x, y, _ = FRONTS[kind]

    def shows(rows: list[dict], name: str) -> bool:
        # One point is no front: it needs two to trade one figure for another.
        measured = [p for p in work_points(of_task(task, rows))
                    if p[x] is not None and p[y] is not None]
        return len(measured) > 1
    return shows


def draw_memory(ax: Axes, rows: list[dict], name: str = "") -> None:
    """Horizontal bars, so that long model and variant names read as they are."""
    bars = memory_bars(rows)
    limit = memory_limit(rows)
    ax.set_xlabel("peak memory (MiB), the largest over its jobs")
    names = list(bars)[::-1]  # top to bottom in name order
    # Where any oom has a length, two slots per model and variant: its peak above, its oom below.
    ooms = [(i - 0.2, bars[n]["oom"]) for i, n in enumerate(names) if bars[n]["oom"]]
    shift = 0.2 if ooms else 0.0
    peaks = [(i + shift, bars[n]["peak"]) for i, n in enumerate(names) if bars[n]["peak"]]
    if peaks:
        ax.barh(*zip(*peaks), height=0.4 if ooms else 0.6, color="tab:blue",
                label="peak (done)")
    if ooms:
        ax.barh(*zip(*ooms), height=0.4, color="none", edgecolor=OOM_COLOUR, hatch="//",
                label="oom (at the limit)" if limit is not None else "oom (its peak)")
    for i, n in enumerate(names):
        if bars[n]["had_oom"]:
            # With no limit and no peak there is no length to draw, only the fact.
            text = " oom" if bars[n]["oom"] is not None else " oom (no limit known)"
            ax.text(bars[n]["oom"] or 0.0, i - shift, text, ha="left", va="center",
                    color=OOM_COLOUR, fontsize=8)
    if limit is not None:
        ax.axvline(limit, color=OOM_COLOUR, linestyle="--", label=f"limit {limit:.0f} MiB")
    if any(b["had_oom"] for b in bars.values()):
        ax.set_xlim(0, ax.get_xlim()[1] * 1.15)  # room for the word oom right of its bar
    ax.set_yticks(range(len(names)), labels=names, fontsize=8)
    ax.set_ylim(-0.6, len(names) - 0.4)
    legend_outside(ax)


def main_charts(rows: list[dict]) -> list[Chart]:
    """Fronts per task (a score means nothing across tasks), then latency by batch size and
    memory over all of them."""
    tasks = sorted({r["task"] for r in rows if r.get("task") and r.get("status") == Status.DONE})
    charts = []
    for task in tasks if len(tasks) > 1 else [None]:
        rows_of_task = of_task(task, rows)
        for kind in front_kinds(rows_of_task):
            x, y, _ = FRONTS[kind]
            caption = (f"Pareto front{f' on {task}' if task else ''}: "
                       f"{'score' if y == 'score' else 'latency'} against "
                       f"{'memory' if x == 'memory' else 'latency'}, "
                       f"{'up' if y == 'score' else 'down'} and left is better; "
                       "medians over the devices and repeats")
            charts.append(Chart(f"{task}-{kind}" if task else kind, caption,
                                lambda ax, rows, name, task=task, kind=kind:
                                draw_front(ax, of_task(task, rows), kind),
                                has_front(kind, task)))
    from farm.batch_charts import LATENCY_BY_BATCH  # it draws with this module's helpers

    return charts + [
        LATENCY_BY_BATCH,
        Chart("memory", "peak memory per model and variant", draw_memory, has_memory)]


def pools(rows: list[dict]) -> list[str]:
    """The pools (targets) that ran jobs, their file names checked to be safe."""
    names = sorted({r["target"] for r in rows if r.get("target") and r.get("device")})
    file_safe([pool_file(pool) for pool in names], "pool")
    return names


def devices(rows: list[dict]) -> list[str]:
    """Devices that ran jobs, checked to be safe as file names; queued jobs may have none yet."""
    return file_safe(sorted({r["device"] for r in rows if r.get("device") is not None}),
                     "device")


def write_report(rows: list[dict], out_dir: Path, title: str,
                 differences: list[dict] | Callable[[], list[dict]] = (),
                 per_device: bool = False, processes: int = 1,
                 on_chart: Callable[[int, int], None] | None = None) -> list[Path]:
    """Write each pool's charts (PNG and SVG), with per_device each device's fronts, latency and
    memory charts too, and index.html into out_dir; return the PNGs' and the page's paths, the
    charts first. `differences`: `farm compare`'s records of each variant against fp32
    (farm.compare_view.difference_records), shown with the non-significant ones marked ~; or
    what works them out (farm.readers.report_reading), called while the charts are drawn.
    `processes`: up to this many charts drawn at once, each in a forked process (`farm report`
    forks one per core; a caller with threads of its own had better not fork). `on_chart`:
    told (charts drawn, of how many) as each is written, and (0, how many) first."""
    from farm.exit_charts import EXIT_CHARTS
    from farm.method_charts import method_charts
    from farm.report_page import render_page

    if not rows:
        raise ValueError("no results to report")
    groups = [(pool_name(p), pool_file(p), in_pool(rows, p), p,
               [*main_charts(in_pool(rows, p)), *EXIT_CHARTS, *method_charts()])
              for p in pools(rows)]
    if per_device:
        groups += [(f"device {d}", d, on_device(rows, d), d, main_charts(on_device(rows, d)))
                   for d in devices(rows)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Which charts have something to show, asked once, here: what charts share (a pool's method
    # points) is worked out before the processes fork, not by each that draws one.
    shown = [[chart for chart in charts if chart.shows(group_rows, name)]
             for _, _, group_rows, name, charts in groups]
    sections = [(heading, [(chart.png(out_dir, stem), chart.caption) for chart in charts])
                for (heading, stem, *_), charts in zip(groups, shown) if charts]

    def page_text() -> str:  # while the charts are drawn: the page only links to them
        found = differences() if callable(differences) else differences
        return render_page(rows, title, sections, found)

    text = _drawn([(chart, group_rows, name, stem, f"{title}: {heading}")
                   for (heading, stem, group_rows, name, _), charts in zip(groups, shown)
                   for chart in charts],
                  out_dir, processes, on_chart or (lambda done, of: None), page_text)
    page = out_dir / "index.html"
    page.write_text(text, encoding="utf-8")
    return [path for _, written in sections for path, _ in written] + [page]


_DRAWING: tuple = ()  # what the forked processes of _drawn draw: (charts, out_dir)


def _drawn(charts: list[tuple], out_dir: Path, processes: int,
           on_chart: Callable[[int, int], None], meanwhile: Callable[[], object]) -> object:
    """Each of `charts` ((chart, rows, pool or device, file stem, title)) as write_chart writes
    it (seconds each, for a pool of many models and variants), side by side in up to
    `processes` forked processes where there are cores to run them on (a sweep of one pool
    too), each with the same code, so the files are the same; returns what `meanwhile`
    returns, called here while they are drawn."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    global _DRAWING
    # The charts of many panels first: they take longest, and the others fill in around them.
    order = sorted(range(len(charts)), key=lambda i: charts[i][0].draw_figure is None)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = min(len(order), cores or 1, processes)
    on_chart(0, len(order))
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        for done, index in enumerate(order, 1):
            _draw(index, (charts, out_dir))
            on_chart(done, len(order))
        return meanwhile()
    _DRAWING = (charts, out_dir)  # inherited by the forked processes, never pickled
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = [pool.submit(_draw, index) for index in order]
            later = meanwhile()
            for done, future in enumerate(as_completed(futures), 1):
                future.result()  # a chart that failed fails the report
                on_chart(done, len(order))
    finally:
        _DRAWING = ()
    return later


def _draw(index: int, drawing: tuple = ()) -> None:
    charts, out_dir = drawing or _DRAWING
    chart, rows, name, stem, title = charts[index]
    write_chart(chart, rows, name, stem, out_dir, title)
