"""Early exit's charts per pool of devices (farm report): score against the measured latency and
against the FLOPs per example, a line per early-exit model across its thresholds (farm.exits),
the pool's static variants as points, and the Pareto front over all of them.
"""
from __future__ import annotations

from matplotlib.axes import Axes

from farm.charts import Chart, legend_outside, note_nothing, place_labels
from farm.report import FRONT_COLOUR, pareto_front, score_label


def draw_exit_curves(ax: Axes, rows: list[dict], pool: str, x: str) -> None:
    from farm.exits import exit_curves, static_points

    curves, static = exit_curves(rows, pool, x), static_points(rows, pool, x)
    scale = 1e9 if x == "flops" else 1.0
    ax.set_xlabel("GFLOP per example" if x == "flops" else "latency per example (ms)")
    ax.set_ylabel(score_label([p["row"] for c in curves.values() for p in c] +
                              [p["row"] for p in static]))
    if not curves and not static:
        note_nothing(ax)
        return
    marks = []
    for name, points in curves.items():
        ax.plot([p["x"] / scale for p in points], [p["y"] for p in points], marker="o",
                label=name)
        marks += [(p["x"] / scale, p["y"], f"{p['value']:g}") for p in points]
    if static:
        ax.scatter([p["x"] / scale for p in static], [p["y"] for p in static], marker="s",
                   color="tab:gray", label="static variants")
        marks += [(p["x"] / scale, p["y"], p["row"]["variant"]) for p in static]
    front = pareto_front([p for c in curves.values() for p in c] + static, "x", "y")
    ax.step([p["x"] / scale for p in front], [p["y"] for p in front], where="post",
            color=FRONT_COLOUR, linewidth=1, linestyle="--", label="Pareto front")
    legend_outside(ax)
    place_labels(ax, marks)


def has_curves(x: str):
    """Whether a pool has an early-exit curve on x (ms or flops)."""
    def shows(rows: list[dict], pool: str) -> bool:
        from farm.exits import exit_curves

        return bool(exit_curves(rows, pool, x))
    return shows


# Per pool of devices (the sweep's target), where it ran early-exit jobs; files pool-<name>-*.
EXIT_CHARTS = (
    Chart("exit-latency", "early exit: score against measured latency per example "
          "(up and left is better)",
          lambda ax, rows, pool: draw_exit_curves(ax, rows, pool, "ms"), has_curves("ms")),
    Chart("exit-flops", "early exit: score against FLOPs per example (up and left is better)",
          lambda ax, rows, pool: draw_exit_curves(ax, rows, pool, "flops"), has_curves("flops")),
)
