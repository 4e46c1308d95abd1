"""What every chart of `farm report` shares: its files (a PNG for the page and an SVG for a paper,
named by pool or device), labels that never cover each other, and the little marks around them.

A chart is a `Chart`: its file suffix, its caption, how to draw it and whether it has anything
to show; a chart with nothing to show is not written at all. Most draw on one Axes; a chart of
several panels (small multiples) lays out its own figure.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import rc_context
# No pyplot: it keeps every figure in a process-wide registry until plt.close, and choosing its
# backend would change it for the whole process. A bare Figure on an Agg canvas renders without
# a display and is freed like any other object once the chart is written.
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

FILE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
ALL_DEVICES = "*"  # the target of a sweep that names no devices: every device of the inventory
POOL = "pool-"
FIGSIZE, DPI = (9.0, 5.6), 150


@dataclass(frozen=True)
class Chart:
    suffix: str                                       # the file is <stem>-<suffix>.png and .svg
    caption: str
    draw: Callable[[Axes, list[dict], str], None] | None  # (axes, rows, the pool or device)
    shows: Callable[[list[dict], str], bool] = lambda rows, name: True
    # Instead of draw, for a chart of several panels: (figure, rows, the pool or device, title);
    # it sizes the figure, adds its axes and puts the title where its layout wants it.
    draw_figure: Callable[[Figure, list[dict], str, str], None] | None = None

    def png(self, out_dir: Path, stem: str) -> Path:
        """Where write_chart writes it (its SVG beside it)."""
        return out_dir / f"{stem}-{self.suffix}.png"

    def fill(self, fig: Figure, rows: list[dict], name: str, title: str) -> None:
        if self.draw_figure is not None:
            self.draw_figure(fig, rows, name, title)
            return
        ax = fig.add_subplot()
        # The title first: a chart that places labels by measuring needs the final layout.
        ax.set_title(title, fontsize=10, y=1.0)  # where matplotlib puts it, unmeasured
        self.draw(ax, rows, name)


def pool_file(pool: str) -> str:
    return POOL + ("all" if pool == ALL_DEVICES else pool)


def pool_name(pool: str) -> str:
    return "all devices" if pool == ALL_DEVICES else f"pool {pool}"


def file_safe(names: list[str], what: str) -> list[str]:
    for name in names:
        if not FILE_NAME.fullmatch(name):
            raise ValueError(f"{what} name {name!r} cannot name a chart file: "
                             "use letters, digits, '.', '_' and '-'")
    return names


def write_chart(chart: Chart, rows: list[dict], name: str, stem: str, out_dir: Path,
                title: str) -> Path:
    """The chart (one with something to show: Chart.shows) as stem-suffix.png and .svg in
    out_dir; returns the PNG's path."""
    fig = Figure(figsize=FIGSIZE, layout="constrained")
    FigureCanvasAgg(fig)
    chart.fill(fig, rows, name, f"{title}\n{chart.caption}")
    # Laid out once, for the PNG, and kept for the SVG: each savefig would lay it out again
    # (panels by the dozen take a second). Then no layout engine at all: with one, even
    # "none"'s placeholder, savefig draws the whole figure once more before it draws it.
    fig.set_dpi(DPI)
    fig.get_layout_engine().execute(fig)
    with rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        fig.set_layout_engine(None)  # None: what these say, no engine
    path = chart.png(out_dir, stem)
    fig.savefig(path, dpi=DPI)
    # No date in the SVG, and its ids (of clip paths) salted alike, not at random: the same
    # results give the same file.
    with rc_context({"svg.hashsalt": "farm"}):
        fig.savefig(path.with_suffix(".svg"), metadata={"Date": None})
    return path


def legend_outside(ax: Axes, title: str | None = None) -> None:
    """The legend right of the axes, where it covers no mark or label."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title=title, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0,
                  fontsize=8, title_fontsize=8)


def note_nothing(ax: Axes, note: str = "nothing measured") -> None:
    ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, color="tab:gray")


def series_style(i: int) -> dict:
    """The look of the i-th of a chart's series, the same in each of its panels: matplotlib's
    ten colours, then the ten again with another marker."""
    return {"color": f"C{i % 10}", "marker": "os^Dv"[i // 10 % 5]}


def panel_axes(fig: Figure, places: list[tuple[int, int, Hashable]]) -> dict[tuple, Axes]:
    """Small multiples' axes by (row, column), one per place (row, column, group): one x axis
    for all, numbered under the bottom panel of each column, and one y axis per group,
    numbered left of its leftmost panel. Shared before anything is drawn, so that each axis
    spans the data of all its panels."""
    grid = fig.add_gridspec(max(r for r, _, _ in places) + 1, max(c for _, c, _ in places) + 1)
    axes: dict[tuple, Axes] = {}
    leaders: dict[Hashable, Axes] = {}
    for row, column, group in places:
        axes[row, column] = fig.add_subplot(grid[row, column], sharex=axes.get((0, 0)),
                                            sharey=leaders.get(group))
        leaders.setdefault(group, axes[row, column])
    for row, column, _ in places:
        ax, left = axes[row, column], axes.get((row, column - 1))
        ax.tick_params(labelbottom=(row + 1, column) not in axes,
                       labelleft=left is None or not left.get_shared_y_axes().joined(left, ax))
    return axes


# Where a label may go, tried in this order: (offset in points, ha, va).
PLACES = (((5, 3), "left", "bottom"), ((5, -3), "left", "top"), ((-5, 3), "right", "bottom"),
          ((-5, -3), "right", "top"), ((0, 7), "center", "bottom"),
          ((0, -7), "center", "top"), ((12, 10), "left", "bottom"),
          ((12, -10), "left", "top"), ((-12, 10), "right", "bottom"),
          ((-12, -10), "right", "top"))
# Where the note of labels left out may go, in axes coordinates: (x, y, ha, va).
CORNERS = ((0.01, 0.99, "left", "top"), (0.99, 0.99, "right", "top"),
           (0.01, 0.01, "left", "bottom"), (0.99, 0.01, "right", "bottom"))


def place_labels(ax: Axes, marks: list[tuple[float, float, str]],
                 lines: list[tuple[list[float], list[float]]] = (), note: str = "") -> int:
    """Label each mark at the first of PLACES that covers no other label, text, legend, mark or
    line (lines: (xs, ys) in data coordinates) and stays inside the axes; marks given first are
    placed first. A mark with no such place goes unlabelled, and the chart says how many did:
    text over text is worse than a name left to the table. That count and `note` go in the
    first free corner. Returns how many marks were left unlabelled."""
    fig = ax.figure
    if fig.get_layout_engine() is not None:
        fig.get_layout_engine().execute(fig)  # measure where the marks will be drawn
    ax.apply_aspect()
    renderer = fig.canvas.get_renderer()
    frame = _extents(ax.get_window_extent(renderer))
    half = renderer.points_to_pixels(4)
    room = _Room(frame)
    for box in [box for t in ax.texts for box in _text_boxes(t, renderer)]:
        room.add(_extents(box))
    if ax.get_legend() is not None:
        room.add(_extents(ax.get_legend().get_window_extent(renderer)))
    points = ax.transData.transform([(x, y) for x, y, _ in marks]) if marks else []
    for px, py in points:
        room.add((px - half, py - half, px + half, py + half))
    for xs, ys in lines:
        for box in _segment_boxes(ax.transData.transform(list(zip(xs, ys)))):
            room.add(_extents(box))
    left_out, floor, shifts = 0, _Floor(ax, renderer), _shifts(renderer)
    for (x, y, text), point in zip(marks, points):
        if not _may_fit(floor(text), point, frame, room, shifts):
            left_out += 1  # no place has room even for its smallest box: not measured
            continue
        label = ax.annotate(text, (x, y), xytext=PLACES[0][0], textcoords="offset points",
                            fontsize=8)
        label.set_in_layout(False)
        if not _place_label(label, point, frame, room, renderer, shifts):
            label.remove()
            left_out += 1
    notes = [note] if note else []
    if left_out:
        notes.append(f"{left_out} of {len(marks)} points unlabelled: their labels would overlap")
    if notes:
        text = ax.text(*CORNERS[0][:2], "\n".join(notes), transform=ax.transAxes, fontsize=8,
                       color="tab:gray")
        text.set_in_layout(False)
        _place_note(text, frame, room, renderer)
    return left_out


class _Floor:
    """Boxes (width, height, in pixels) no larger than a label's own: measuring every label is
    most of a dense chart's time (a thousand points, most of them left unlabelled), and where
    even its floor finds no place at a mark, the label's box, which holds its floor at every
    place, finds none either. Height: every one-line label is at least as tall as "." or "lp"
    (matplotlib lays a line out at least as tall as its font's ascent and descent). Width:
    that of its words, less a tenth for safety (the line lays their glyphs out as each word
    alone does, and a space between them); the words repeat (a model's name, a variant), so
    each is measured once. A label of several lines, or of no word, has no floor."""

    def __init__(self, ax: Axes, renderer):
        self.ax, self.renderer, self.widths = ax, renderer, {}
        self.height = min(self._measure(text).height for text in (".", "lp"))

    def _measure(self, text: str) -> Bbox:
        probe = self.ax.annotate(text, (0.5, 0.5), xycoords="axes fraction", fontsize=8)
        box = probe.get_window_extent(self.renderer)
        probe.remove()
        return box

    def __call__(self, text: str) -> tuple[float, float] | None:
        words = [word for word in text.split(" ") if word.strip()]
        if "\n" in text or not words:
            return None
        for word in words:
            if word not in self.widths:
                self.widths[word] = 0.9 * self._measure(word).width
        return sum(self.widths[word] for word in words), self.height


def _may_fit(floor: tuple[float, float] | None, point, frame: tuple, room: _Room,
             shifts: list[tuple]) -> bool:
    """Whether a box of the floor's size fits at any of PLACES (_place_label's test); False
    only where the label cannot be placed."""
    return floor is None or any(_inside(where, frame) and room.free(where)
                                for _, where in _boxes(point, *floor, shifts))


def _shifts(renderer) -> list[tuple]:
    """Each of PLACES with its offset in pixels."""
    return [(place, renderer.points_to_pixels(place[0][0]), renderer.points_to_pixels(place[0][1]))
            for place in PLACES]


def _boxes(point, width: float, height: float, shifts: list[tuple]):
    """Each of PLACES with the box (x0, y0, x1, y1) a text of this size takes there: set against
    the mark as the place aligns it (matplotlib's own layout of an unrotated line of text)."""
    for place, dx, dy in shifts:
        _, ha, va = place
        x, y = point[0] + dx, point[1] + dy
        x0 = x if ha == "left" else x - width if ha == "right" else x - width / 2
        y0 = y if va == "bottom" else y - height if va == "top" else y - height / 2
        yield place, (x0, y0, x0 + width, y0 + height)


def _place_label(label, point, frame: tuple, room: _Room, renderer, shifts: list[tuple]) -> bool:
    """Move a label to the first of PLACES where it covers nothing taken, inside frame; True if
    one was found (then it is taken too). Its size is measured once: at each place its box is
    that size (_boxes), which is what measuring it there would give."""
    box = label.get_window_extent(renderer)
    for ((dx, dy), ha, va), where in _boxes(point, box.width, box.height, shifts):
        if _inside(where, frame) and room.free(where):
            label.xyann = (dx, dy)
            label.set(ha=ha, va=va)
            room.add(where)
            return True
    return False


def _place_note(text, frame: tuple, room: _Room, renderer) -> None:
    """The note in the first corner where it covers nothing taken, else in the first corner."""
    for x, y, ha, va in CORNERS:
        text.set_position((x, y))
        text.set(ha=ha, va=va)
        where = _extents(text.get_window_extent(renderer))
        if _inside(where, frame) and room.free(where):
            room.add(where)
            return
    text.set_position(CORNERS[0][:2])
    text.set(ha=CORNERS[0][2], va=CORNERS[0][3])


class _Room:
    """The boxes taken inside a chart's frame (x0, y0, x1, y1 in pixels). A box is tested first
    against a map of the frame's pixels that a box taken covers whole: it overlaps a box where
    it touches one of those (a label in a crowd, most of them, is refused in one look). Else it
    is checked against the boxes filed by the cells of a coarse grid that it covers: its
    neighbours, not every box (a chart of thousands of points took minutes). For a box inside
    the frame, the only kind a label may take, both answer as _overlaps against every box
    would; what lies outside the frame (the legend) is never in a label's way."""
    CELL = 40.0
    EDGE = 1e-6  # how far inside a pixel a box must reach: rounding never decides an overlap

    def __init__(self, frame: tuple):
        self.frame = frame
        self.cells: dict[tuple[int, int], list[tuple]] = {}
        self.covered = np.zeros((max(0, math.ceil(frame[3] - frame[1])),
                                 max(0, math.ceil(frame[2] - frame[0]))), dtype=bool)

    def _clipped(self, box: tuple) -> tuple | None:
        """The box inside the frame, from the frame's corner; None where none of it is."""
        (x0, y0, x1, y1), (f0, g0, f1, g1) = box, self.frame
        x0, y0, x1, y1 = max(x0, f0), max(y0, g0), min(x1, f1), min(y1, g1)
        if not (x0 <= x1 and y0 <= y1):  # outside the frame, or not a number
            return None
        return x0 - f0, y0 - g0, x1 - f0, y1 - g0

    def _cells(self, box: tuple):
        clipped = self._clipped(box)
        if clipped is None:
            return ()
        x0, y0, x1, y1 = (int(v // self.CELL) for v in clipped)
        return ((i, j) for i in range(x0, x1 + 1) for j in range(y0, y1 + 1))

    def add(self, box: tuple) -> None:
        for cell in self._cells(box):
            self.cells.setdefault(cell, []).append(box)
        clipped, e = self._clipped(box), self.EDGE
        if clipped is not None:  # the pixels it covers whole (none: an end below 0 would wrap)
            x0, y0, x1, y1 = clipped
            self.covered[math.ceil(y0 + e):max(0, math.floor(y1 - e)),
                         math.ceil(x0 + e):max(0, math.floor(x1 - e))] = True

    def free(self, box: tuple) -> bool:
        clipped, e = self._clipped(box), self.EDGE
        if clipped is not None:  # the pixels it overlaps, by more than EDGE each way
            x0, y0, x1, y1 = clipped
            if x1 - x0 > e and y1 - y0 > e and self.covered[
                    math.floor(y0 + e):math.ceil(y1 - e),
                    math.floor(x0 + e):math.ceil(x1 - e)].any():
                return False
        return not any(_overlaps(box, other) for cell in self._cells(box)
                       for other in self.cells.get(cell, ()))


def _extents(box: Bbox) -> tuple:
    return box.x0, box.y0, box.x1, box.y1


def _overlaps(a: tuple, b: tuple) -> bool:
    """Whether two boxes share any area (touching edges do not)."""
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _inside(box: tuple, frame: tuple) -> bool:
    return (box[0] >= frame[0] and box[1] >= frame[1] and box[2] <= frame[2]
            and box[3] <= frame[3])


def _text_boxes(text, renderer) -> list[Bbox]:
    """A text's room: its box, or for a slanted text a band along it (its box would be a square
    over much of the chart)."""
    box = text.get_window_extent(renderer)
    angle = text.get_rotation() % 180
    if angle in (0, 90):
        return [box]
    ends = ((box.x0, box.y0), (box.x1, box.y1)) if angle < 90 else ((box.x0, box.y1),
                                                                      (box.x1, box.y0))
    return _segment_boxes(ends, renderer.points_to_pixels(text.get_fontsize()) / 2)


def _segment_boxes(points, pad: float = 1.0, step: float = 4.0) -> list[Bbox]:
    """A polyline in pixels as small boxes, a few pixels each, so that a label may sit beside a
    diagonal."""
    boxes = []
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        pieces = max(1, int(max(abs(x1 - x0), abs(y1 - y0)) / step))
        for i in range(pieces):
            (ax0, ay0), (ax1, ay1) = [(x0 + f * (x1 - x0), y0 + f * (y1 - y0))
                                      for f in (i / pieces, (i + 1) / pieces)]
            boxes.append(Bbox.from_extents(min(ax0, ax1) - pad, min(ay0, ay1) - pad,
                                           max(ax0, ax1) + pad, max(ay0, ay1) + pad))
    return boxes
