"""farm report's latency by batch size, per pool of devices: a curve per model and variant on
one panel while there are a few (ONE_PANEL), else small multiples, a panel per model and
sequence length with a curve per variant, the panels of a model sharing one latency axis and
all of them one batch axis, and one legend of the variants.

`latency_series` and `latency_panels` are the data the tests check; the drawing only draws.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from farm.charts import FIGSIZE, Chart, legend_outside, note_nothing, panel_axes, series_style
from farm.report import LABELS, LOG_BATCH_SPAN, log_if_spread, series_name, varying, work_points

# Small multiples compare variants by ratio, across lengths that scale latency several times.
LOG_PANEL_SPAN = 4
ONE_PANEL = 10  # more curves of latency by batch size than this: a panel per model


def latency_series(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Per model and variant (and task, sequence length where they differ): (batch size, median
    ms per sample over its jobs), by batch size."""
    return _named_series(_latency_points(rows))


def _latency_points(rows: list[dict]) -> list[dict]:
    return [p for p in work_points(rows)
            if p["per_sample_ms"] is not None and p["batch_size"] is not None]


def _named_series(points: list[dict]) -> dict[str, list[tuple[int, float]]]:
    differing = varying(points)
    series: dict[str, list[tuple[int, float]]] = {}
    for p in points:
        series.setdefault(series_name(p, differing), []).append((p["batch_size"],
                                                                 p["per_sample_ms"]))
    return {name: sorted(values) for name, values in sorted(series.items())}


def has_batch_curve(rows: list[dict], name: str = "") -> bool:
    """Latency by batch size shows something only with two batch sizes of one series."""
    return any(len(points) > 1 for points in latency_series(rows).values())


@dataclass(frozen=True)
class Panel:
    """One panel of latency by batch size: its title (none for the one panel of a few curves),
    where it sits in the grid, its curves (legend label: (batch size, ms) by batch size), the
    series there run at one batch size (no curve: not drawn) and its `group`, the task and
    model whose panels share one latency axis."""
    title: str
    row: int
    column: int
    curves: dict[str, list[tuple[int, float]]]
    single: int = 0
    group: tuple = ()


def latency_panels(rows: list[dict]) -> list[Panel]:
    """Latency by batch size as small multiples. While there are at most ONE_PANEL curves (a
    series at two batch sizes or more), one panel of them all, named as latency_series names
    them. Else a panel per task and model (the grid's rows, the fastest model first: its median
    latency) and sequence length (its columns), with a curve per variant; where only one of
    the two varies, its panels wrapped into a near-square grid. A panel counts its series run
    at one batch size; one of the grid with no series says so (`single` 0, no curves)."""
    points = _latency_points(rows)
    named = _named_series(points)
    if sum(len(s) > 1 for s in named.values()) > ONE_PANEL:
        return _latency_grid(points)
    curves = {label: s for label, s in named.items() if len(s) > 1}
    return [Panel("", 0, 0, curves, len(named) - len(curves))]


def _latency_grid(points: list[dict]) -> list[Panel]:
    cells: dict[tuple, dict[str, list[tuple[int, float]]]] = {}
    for p in points:  # work_points' order: by variant, then batch size, in each cell
        cells.setdefault((p["task"], p["model"], p["seq_len"]), {}).setdefault(
            p["variant"], []).append((p["batch_size"], p["per_sample_ms"]))
    speed: dict[tuple, list[float]] = {}
    for (task, model, _), series in cells.items():
        speed.setdefault((task, model), []).extend(ms for s in series.values() for _, ms in s)
    groups = sorted(speed, key=lambda g: (median(speed[g]), [(v is None, v) for v in g]))
    lengths = sorted({length for _, _, length in cells}, key=lambda v: (v is None, v))
    width = (len(lengths) if len(groups) > 1 and len(lengths) > 1
             else math.ceil(math.sqrt(len(groups) * len(lengths))))
    tasks = len({task for task, _ in groups}) > 1
    panels = []
    for i, (task, model, length) in enumerate((*g, n) for g in groups for n in lengths):
        series = cells.get((task, model, length), {})
        title = " ".join([str(task)] * tasks + [str(model)])
        panels.append(Panel(title + (f", seq {length}" if len(lengths) > 1 else ""),
                            i // width, i % width,
                            {v: s for v, s in series.items() if len(s) > 1},
                            sum(len(s) == 1 for s in series.values()), (task, model)))
    return panels


def draw_latency_by_batch(fig: Figure, rows: list[dict], name: str, title: str) -> None:
    """latency_panels: one panel drawn as any chart, or small multiples on one batch axis, a
    latency axis per model and one legend of the variants."""
    panels = latency_panels(rows)
    styles = {label: series_style(i) for i, label in
               enumerate(sorted({label for p in panels for label in p.curves}))}
    if panels[0].title:
        _draw_small_multiples(fig, panels, styles, title)
        return
    ax = fig.add_subplot()  # few curves: one panel, as any chart
    ax.set_title(title, fontsize=10, y=1.0)
    ax.set_xlabel("batch size")
    ax.set_ylabel(LABELS["per_sample_ms"])
    _draw_panel(ax, panels[0], styles, f"not shown: {panels[0].single} run at one batch size")
    if panels[0].curves:
        _batch_axis(ax, _batches(panels))
        log_if_spread(ax, "y", [ms for c in panels[0].curves.values() for _, ms in c])
    legend_outside(ax)


def _draw_small_multiples(fig: Figure, panels: list[Panel], styles: dict, title: str) -> None:
    rows, columns = max(p.row for p in panels) + 1, max(p.column for p in panels) + 1
    fig.set_size_inches(max(FIGSIZE[0], 1.8 + 2.4 * columns), max(FIGSIZE[1], 1.2 + 1.9 * rows))
    fig.suptitle(title, fontsize=10)
    fig.supxlabel("batch size", fontsize=10)
    fig.supylabel(LABELS["per_sample_ms"], fontsize=10)
    axes = panel_axes(fig, [(p.row, p.column, p.group) for p in panels])
    for p in panels:
        ax = axes[p.row, p.column]
        ax.set_title(p.title, fontsize=9, y=1.0)
        ax.tick_params(labelsize=8)
        _draw_panel(ax, p, styles, f"{p.single} at one batch size", markersize=4)
    _batch_axis(axes[0, 0], _batches(panels))
    for group in dict.fromkeys(p.group for p in panels):
        mine = [p for p in panels if p.group == group]
        log_if_spread(axes[mine[0].row, mine[0].column], "y",
                      [ms for p in mine for c in p.curves.values() for _, ms in c],
                      LOG_PANEL_SPAN)
    fits = int(fig.get_figheight() * 72 / 14)  # legend entries one column holds
    fig.legend([Line2D([], [], markersize=4, **style) for style in styles.values()],
               list(styles), loc="outside right upper", title="variant", fontsize=8,
               title_fontsize=8, ncols=math.ceil(len(styles) / fits))


def _draw_panel(ax: Axes, panel: Panel, styles: dict, not_shown: str, **style) -> None:
    for label, points in panel.curves.items():
        ax.plot([b for b, _ in points], [ms for _, ms in points], label=label,
                **styles[label], **style)
    if panel.curves and panel.single:
        ax.text(0.99, 0.99, not_shown, transform=ax.transAxes, ha="right", va="top",
                fontsize=7 if panel.title else 8, color="tab:gray")
    elif not panel.curves:
        note_nothing(ax, f"{panel.single} run at one batch size only" if panel.single
                     else "nothing measured")


def _batches(panels: list[Panel]) -> list[int]:
    return sorted({b for p in panels for points in p.curves.values() for b, _ in points})


def _batch_axis(ax: Axes, batches: list[int]) -> None:
    if batches[-1] / batches[0] > LOG_BATCH_SPAN:
        ax.set_xscale("log", base=2)
    ax.set_xticks(batches, labels=[str(b) for b in batches])
    ax.minorticks_off()


LATENCY_BY_BATCH = Chart("latency-batch", "latency per sample by batch size, medians over the "
                         "devices and repeats", None, has_batch_curve, draw_latency_by_batch)
