"""What every chart shares (farm.charts): labels that cover nothing, and where they have room."""
from __future__ import annotations

import math
import random

import pytest

from farm.charts import _overlaps, _Room

# A warning from matplotlib (an empty legend, a bad axis) is a chart drawn wrong.
pytestmark = pytest.mark.filterwarnings("error")


def test_room_answers_as_checking_every_box_would():
    """_Room files boxes by cell and by the pixels they cover whole; for any box inside the
    frame its answer is that of _overlaps against every box taken: boxes on the frame's edges,
    touching each other, a pixel wide or thinner, partly or wholly outside, not a number."""
    rng = random.Random(7)
    frame = (10.25, 20.5, 410.75, 260.0)

    def coordinate(low: float, high: float) -> float:
        value = rng.uniform(low - 20, high + 20)
        return rng.choice([value, round(value), round(value * 2) / 2, low, high])

    def box() -> tuple:
        x0, y0 = coordinate(frame[0], frame[2]), coordinate(frame[1], frame[3])
        return (x0, y0, x0 + rng.choice([0.0, 0.5, 1.0, rng.uniform(0, 60), rng.uniform(2, 60)]),
                y0 + rng.choice([0.0, 0.5, 1.0, rng.uniform(0, 30), rng.uniform(2, 30)]))

    covering = 0
    for _ in range(20):
        room, taken = _Room(frame), []
        for _ in range(rng.randint(5, 60)):
            taken.append(box())
            room.add(taken[-1])
        room.add((math.nan, 30.0, 40.0, 50.0))
        covering += room.covered.any()
        for _ in range(300):
            asked = box()
            if not (frame[0] <= asked[0] and frame[1] <= asked[1] and asked[2] <= frame[2]
                    and asked[3] <= frame[3]):
                continue
            assert room.free(asked) == (not any(_overlaps(asked, b) for b in taken)), asked
    assert covering >= 10  # the pixels answered too, not the cells alone


def test_placed_labels_cover_no_other_and_stay_inside_the_axes():
    """A crowded chart (300 points): the labels place_labels keeps, measured where matplotlib
    draws them, overlap no other label and no mark and stay inside the axes; the others are
    counted, and the count is said on the chart."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from farm.charts import FIGSIZE, place_labels

    rng = random.Random(0)
    marks = [(rng.uniform(0, 10), rng.uniform(0, 10), f"bert-tiny v{i} b{2 ** (i % 6)}")
             for i in range(300)]
    fig = Figure(figsize=FIGSIZE, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter([x for x, _, _ in marks], [y for _, y, _ in marks], s=25)
    left_out = place_labels(ax, marks)
    renderer = fig.canvas.get_renderer()
    names = {text for _, _, text in marks}
    boxes = [t.get_window_extent(renderer) for t in ax.texts if t.get_text() in names]
    assert len(boxes) == len(marks) - left_out and 0 < left_out < len(marks)
    assert any(t.get_text().startswith(f"{left_out} of 300 points unlabelled") for t in ax.texts)
    frame, pad = ax.get_window_extent(renderer), 1e-6
    dots = [ax.transData.transform((x, y)) for x, y, _ in marks]
    half = renderer.points_to_pixels(4)
    for i, box in enumerate(boxes):
        assert frame.x0 - pad <= box.x0 and box.x1 <= frame.x1 + pad
        assert frame.y0 - pad <= box.y0 and box.y1 <= frame.y1 + pad
        for other in boxes[i + 1:]:
            assert min(box.x1, other.x1) - max(box.x0, other.x0) <= pad or \
                min(box.y1, other.y1) - max(box.y0, other.y0) <= pad
        assert not any(box.x0 + pad < x + half and x - half < box.x1 - pad and
                       box.y0 + pad < y + half and y - half < box.y1 - pad for x, y in dots)


def _dense_chart(monkeypatch, measure_every: bool):
    """A chart of a thousand points, most too crowded to label (farm.charts.place_labels), as
    farm report draws it; with measure_every, every label is measured, none skipped."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from farm import charts

    if measure_every:
        monkeypatch.setattr(charts, "_may_fit", lambda *args: True)
    rng = random.Random(3)
    marks = [(rng.lognormvariate(5, 1), rng.lognormvariate(0, 1.5),
              f"bert-{rng.choice(['tiny', 'mini', 'base'])} {rng.choice(['fp32', 'int8'])} "
              f"s{rng.choice([64, 128])} b{i}") for i in range(1000)]
    fig = Figure(figsize=charts.FIGSIZE, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title("a title")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.scatter([x for x, _, _ in marks], [y for _, y, _ in marks], label="measured")
    charts.legend_outside(ax)
    left_out = charts.place_labels(ax, marks, [([10, 1000], [0.1, 10])], "a note")
    return left_out, [(t.get_text(), getattr(t, "xyann", None), t.get_position(), t.get_ha(),
                       t.get_va()) for t in ax.texts]


def test_labels_too_crowded_to_place_are_left_out_unmeasured_as_when_measured(monkeypatch):
    """place_labels skips measuring a label that even its floor (farm.charts._Floor) finds no
    place for: the labels placed, where, and the count left out are what measuring each gives."""
    fast = _dense_chart(monkeypatch, measure_every=False)
    every = _dense_chart(monkeypatch, measure_every=True)
    assert fast == every
    assert 0 < len(fast[1]) < 200 and fast[0] > 800  # crowded: most left out


def test_a_labels_floor_is_never_larger_than_the_label():
    """_Floor's box, from the label's words measured alone, fits inside the label's own box:
    where the floor has no room the label has none, and is left out unmeasured."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from farm.charts import FIGSIZE, _Floor

    rng = random.Random(5)
    words = ["bert-base", "bert-tiny", "mobilebert", "albert-unclocked", "fp32", "int8",
             "stream+int8", "heads-25", "rank-50", "mag-90", "ffn-50", "s64", "s512", "b1",
             "b32", "0.5", "ee-0.2", "sst2", "mnli-m", "WAVE", "jjj", "T.V.", "1%", "«x»"]
    fig = Figure(figsize=FIGSIZE)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    renderer = fig.canvas.get_renderer()
    floor = _Floor(ax, renderer)
    for _ in range(300):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 5)))
        box = ax.annotate(text, (0.5, 0.5), fontsize=8).get_window_extent(renderer)
        width, height = floor(text)
        assert width <= box.width and height <= box.height, text
