"""Reports: the Pareto front, the data behind each chart, and the files write_report leaves."""
from __future__ import annotations

import json
import re

import matplotlib.image
import pytest

from farm.batch_charts import ONE_PANEL, Panel, has_batch_curve, latency_panels, latency_series
from farm.method_charts import PLAIN, method_label, method_points
from farm.report_page import research_section
from farm.report import (front_kinds, front_points, has_memory, in_pool, memory_bars, pareto_front,
                         point_label, work_points, write_report)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A warning from matplotlib (an empty legend, a bad axis) is a chart drawn wrong.
pytestmark = pytest.mark.filterwarnings("error")


def names(points: list[dict]) -> list[str]:
    return [p["name"] for p in points]


def test_pareto_front_keeps_points_nothing_beats_sorted_by_x():
    e = {"name": "e", "x": 4, "y": 5}
    points = [
        {"name": "h", "x": 5, "y": 4},        # beaten by e: slower and worse
        e,
        {"name": "d", "x": 3, "y": 3},        # beaten by b: same y, slower
        {"name": "b", "x": 2, "y": 3},
        {"name": "c", "x": 2, "y": 2},        # beaten by b: same x, worse y
        {"name": "e-again", "x": 4, "y": 5},  # equal to e on both axes: kept once, e came first
        {"name": "no-x", "x": None, "y": 9},
        {"name": "no-y", "x": 0.5, "y": None},
        {"name": "a", "x": 1, "y": 1},
    ]
    front = pareto_front(points, "x", "y")
    assert names(front) == ["a", "b", "e"]
    assert front[2] is e


def test_pareto_front_minimizing_y():
    points = [
        {"name": "u", "x": 5, "y": 2},        # beaten by t
        {"name": "t", "x": 4, "y": 1},
        {"name": "s", "x": 3, "y": 3},        # beaten by q: slower, same y
        {"name": "r", "x": 2, "y": 4},        # beaten by q: same x, larger y
        {"name": "q", "x": 2, "y": 3},
        {"name": "p", "x": 1, "y": 5},
        {"name": "no-x", "x": None, "y": 0},
        {"name": "no-y", "x": 0, "y": None},
    ]
    assert names(pareto_front(points, "x", "y", maximize_y=False)) == ["p", "q", "t"]


def test_pareto_front_of_nothing_measured_is_empty():
    assert pareto_front([], "x", "y") == []
    assert pareto_front([{"x": None, "y": 1}], "x", "y") == []


def job(device, model, batch, status="done", **figures) -> dict:
    """A v_results row; every figure not given was not measured."""
    row = {"sweep": "demo", "job_key": f"{device}/{model}/b{batch}", "device": device,
           "target": device, "model": model, "variant": "fp32", "task": "synthetic",
           "batch_size": batch, "seq_len": 128, "status": status, "error": None,
           "p50_ms": None, "per_sample_ms": None, "peak_mem_mb": None, "memory_limit_mb": None,
           "flops": None, "params": None, "score": None, "metric": None, "energy_mj": None,
           "throughput": None}
    row.update(figures)
    return row


@pytest.fixture
def rows() -> list[dict]:
    nano = {"memory_limit_mb": 2048.0}
    return [
        # nano-emu-1: a 2 GiB container; no accuracy measured, so FLOPs stand in for it.
        job("nano-emu-1", "bert-tiny", 1, per_sample_ms=2.0, peak_mem_mb=300.0, flops=0.3e9,
            p50_ms=2.0, params=4.4e6, **nano),
        job("nano-emu-1", "bert-tiny", 8, per_sample_ms=1.0, peak_mem_mb=350.0, flops=0.3e9,
            p50_ms=8.0, params=4.4e6, **nano),
        job("nano-emu-1", "bert-mini", 1, per_sample_ms=5.0, peak_mem_mb=400.0, flops=1.2e9,
            **nano),
        job("nano-emu-1", "bert-mini", 64, per_sample_ms=3.0, peak_mem_mb=900.0, flops=1.2e9,
            **nano),
        job("nano-emu-1", "bert-base", 1, per_sample_ms=40.0, peak_mem_mb=1500.0, flops=22e9,
            **nano),
        job("nano-emu-1", "bert-base", 64, status="oom", peak_mem_mb=2047.0,
            error="killed by the OOM killer at the container's limit", **nano),
        # Done, but its latency was not measured: in the table, on no latency chart.
        job("nano-emu-1", "albert-unclocked", 1, peak_mem_mb=200.0, flops=5e9, **nano),
        # Only its latency was measured: on the latency chart, on no front, no memory bar.
        job("nano-emu-1", "mobilebert", 4, per_sample_ms=0.2, **nano),
        # Failed with figures that would top every chart: jobs not done are never points.
        job("nano-emu-1", "distilbert", 1, status="failed", per_sample_ms=0.1, flops=99e9,
            error="model error: <boom> & more"),
        # workstation: no limit, and one model has a score.
        job("workstation", "bert-tiny", 1, per_sample_ms=0.5, peak_mem_mb=500.0, flops=0.3e9,
            score=0.81, metric="accuracy"),
        job("workstation", "bert-base", 1, per_sample_ms=4.0, peak_mem_mb=900.0, flops=22e9,
            score=0.92, metric="accuracy"),
        job("workstation", "bert-mini", 1, per_sample_ms=1.0, peak_mem_mb=600.0, flops=1.2e9),
        job("workstation", "bert-large", 1, status="oom"),
        # Still queued for a tag: no device yet, so on no chart, only in the table.
        job(None, "electra-small", 1, status="queued", target="nano-2gb"),
    ]


def work(points: list[dict]) -> list[tuple]:
    return [(p["model"], p["variant"], p["batch_size"]) for p in points]


def test_without_a_score_the_front_is_latency_against_memory_both_lower_is_better(rows):
    nano = in_pool(rows, "nano-emu-1")
    assert front_kinds(nano) == ["front-latency-memory"]
    # Least memory first; bert-base b1 (most FLOPs, slowest, largest) is on no front.
    assert work(front_points(nano, "front-latency-memory")) == [
        ("bert-tiny", "fp32", 1), ("bert-tiny", "fp32", 8)]


def test_with_a_score_the_fronts_are_score_against_latency_and_memory(rows):
    desk = in_pool(rows, "workstation") + [
        # Slower, larger and worse than bert-base: on neither front.
        job("workstation", "bert-huge", 1, per_sample_ms=9.0, peak_mem_mb=2000.0, score=0.5)]
    assert front_kinds(desk) == ["front-latency", "front-memory"]
    # bert-mini has no score: it is not on the front, though it is faster than bert-base.
    assert work(front_points(desk, "front-latency")) == [
        ("bert-tiny", "fp32", 1), ("bert-base", "fp32", 1)]
    assert work(front_points(desk, "front-memory")) == [
        ("bert-tiny", "fp32", 1), ("bert-base", "fp32", 1)]


def test_latency_series_leave_out_what_was_not_measured(rows):
    nano = in_pool(rows, "nano-emu-1")
    assert latency_series(nano) == {
        "bert-base fp32": [(1, 40.0)],
        "bert-mini fp32": [(1, 5.0), (64, 3.0)],
        "bert-tiny fp32": [(1, 2.0), (8, 1.0)],
        "mobilebert fp32": [(4, 0.2)],
    }
    assert has_batch_curve(nano)
    assert not has_batch_curve(in_pool(rows, "workstation"))  # every series at batch 1


def test_a_few_curves_share_one_panel_named_as_latency_series_names_them(rows):
    nano = in_pool(rows, "nano-emu-1")
    named = latency_series(nano)
    assert latency_panels(nano) == [Panel("", 0, 0, {
        "bert-mini fp32": named["bert-mini fp32"], "bert-tiny fp32": named["bert-tiny fp32"]},
        single=2)]  # bert-base and mobilebert ran at one batch size


def grid_rows(models: dict[str, float], lengths: tuple, variants: dict[str, float],
              batches=(1, 8)) -> list[dict]:
    """A pool's jobs: each model (its ms per sample at s64) at each sequence length, variant
    (a factor on that) and batch size; latency grows with the length."""
    return [job("nano-1", model, batch, target="nanos", variant=variant, seq_len=length,
                job_key=f"{model}/{variant}/s{length}/b{batch}",
                per_sample_ms=ms * factor * length / 64 * (1 - batch / 100))
            for model, ms in models.items() for length in lengths
            for variant, factor in variants.items() for batch in batches]


def test_many_curves_are_small_multiples_a_row_per_model_a_column_per_length():
    models, lengths = {"bert-mini": 4.0, "bert-tiny": 1.0}, (64, 128)
    variants = {"fp32": 1.0, "int8": 0.5, "heads-50": 0.8}
    rows = grid_rows(models, lengths, variants)
    # fp16 ran on bert-tiny at s64 and batch 1 only: no curve, counted in its panel.
    rows += grid_rows({"bert-tiny": 1.0}, (64,), {"fp16": 0.6}, batches=(1,))
    assert len(models) * len(lengths) * len(variants) > ONE_PANEL
    panels = latency_panels(rows)
    # bert-tiny, the faster, is the first row.
    assert [(p.title, p.row, p.column, p.single) for p in panels] == [
        ("bert-tiny, seq 64", 0, 0, 1), ("bert-tiny, seq 128", 0, 1, 0),
        ("bert-mini, seq 64", 1, 0, 0), ("bert-mini, seq 128", 1, 1, 0)]
    for p in panels:
        model, length = p.title.split(", seq ")
        assert p.group == ("synthetic", model)
        assert p.curves == {variant: [(b, r["per_sample_ms"]) for b in (1, 8) for r in rows
                                      if (r["model"], r["variant"], r["seq_len"], r["batch_size"])
                                      == (model, variant, int(length), b)]
                            for variant in sorted(variants)}


def test_one_model_at_many_lengths_wraps_into_a_square_sharing_one_latency_axis():
    variants = {f"v{i}": 1 + i / 10 for i in range(4)}
    panels = latency_panels(grid_rows({"bert-tiny": 1.0}, (64, 128, 256), variants))
    assert [(p.title, p.row, p.column) for p in panels] == [
        ("bert-tiny, seq 64", 0, 0), ("bert-tiny, seq 128", 0, 1), ("bert-tiny, seq 256", 1, 0)]
    assert {p.group for p in panels} == {("synthetic", "bert-tiny")}
    assert all(list(p.curves) == list(variants) for p in panels)


def test_a_panel_of_the_grid_without_a_curve_says_why():
    variants = {f"v{i}": 1 + i / 10 for i in range(6)}
    rows = (grid_rows({"bert-tiny": 1.0}, (64, 128), variants)
            + grid_rows({"bert-mini": 4.0, "bert-small": 9.0}, (64,), variants)
            # bert-mini ran at s128 at one batch size only; bert-small not at all.
            + grid_rows({"bert-mini": 4.0}, (128,), {"v0": 1.0}, batches=(1,)))
    panels = {p.title: p for p in latency_panels(rows)}
    assert len(panels) == 3 * 2
    assert (panels["bert-mini, seq 128"].curves, panels["bert-mini, seq 128"].single) == ({}, 1)
    assert (panels["bert-small, seq 128"].curves, panels["bert-small, seq 128"].single) == ({}, 0)
    notes = {t.get_text() for ax in drawn_latency_by_batch(rows).axes for t in ax.texts}
    assert notes == {"1 run at one batch size only", "nothing measured"}


def drawn_latency_by_batch(rows: list[dict]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from farm.charts import FIGSIZE
    from farm.batch_charts import draw_latency_by_batch

    fig = Figure(figsize=FIGSIZE, layout="constrained")
    FigureCanvasAgg(fig)
    draw_latency_by_batch(fig, rows, "nanos", "a title")
    fig.canvas.draw()  # lays it out: a warning of a collapsed layout fails the test
    return fig


def test_small_multiples_share_their_batch_axis_and_a_legend_of_the_variants():
    models = {"bert-tiny": 1.0, "bert-mini": 4.0, "bert-small": 9.0}
    variants = {"fp32": 1.0, "int8": 0.5, "heads-50": 0.8, "rank-25": 0.7}
    fig = drawn_latency_by_batch(grid_rows(models, (64, 128), variants))
    assert len(fig.axes) == len(models) * 2
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == sorted(variants)
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox
    for ax in fig.axes:
        box = ax.get_tightbbox(renderer)
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and box.width > 100
        assert len(ax.lines) == len(variants)
        low, high = ax.get_ylim()  # its row's shared axis spans every panel's curves
        assert all(low <= y <= high for line in ax.lines for y in line.get_ydata())
    bottom = [ax for ax in fig.axes if ax.get_subplotspec().is_last_row()]
    left = [ax for ax in fig.axes if ax.get_subplotspec().is_first_col()]
    for ax in fig.axes:  # numbers on the outer axes only; the inner ones share them
        assert any(t.get_visible() and t.get_text() for t in ax.get_xticklabels()) == \
            (ax in bottom)
        assert any(t.get_visible() and t.get_text() for t in ax.get_yticklabels()) == \
            (ax in left)


def test_one_panel_of_few_curves_is_one_axes_with_its_legend_outside(rows):
    fig = drawn_latency_by_batch(in_pool(rows, "nano-emu-1"))
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "bert-mini fp32", "bert-tiny fp32"]
    assert any(t.get_text() == "not shown: 2 run at one batch size" for t in ax.texts)


def test_memory_bars_put_oom_at_the_limit(rows):
    assert memory_bars(in_pool(rows, "nano-emu-1")) == {
        "albert-unclocked fp32": {"peak": 200.0, "oom": None, "had_oom": False},
        "bert-base fp32": {"peak": 1500.0, "oom": 2048.0, "had_oom": True},
        "bert-mini fp32": {"peak": 900.0, "oom": None, "had_oom": False},
        "bert-tiny fp32": {"peak": 350.0, "oom": None, "had_oom": False},
    }
    # No limit and nothing measured: the oom is named, with no bar invented for it.
    assert memory_bars(in_pool(rows, "workstation"))["bert-large fp32"] == {
        "peak": None, "oom": None, "had_oom": True}
    assert not has_memory([job("desk", "bert-large", 1, status="oom")])


def pooled() -> list[dict]:
    """A pooled sweep at batch 1 and 8: int8 ran on nano-2 only, fp32 on nano-1, and fp32 at
    batch 1 on nano-2 too (12 and 14 ms: its point is the median, 13)."""
    def run(device, variant, batch, ms, mib, score):
        return job(device, "bert-tiny", batch, target="nanos", variant=variant,
                   per_sample_ms=ms, peak_mem_mb=mib, score=score, metric="accuracy")

    return [run("nano-1", "fp32", 1, 12.0, 400.0, 0.82),
            run("nano-2", "fp32", 1, 14.0, 400.0, 0.82),
            run("nano-1", "fp32", 8, 6.0, 500.0, 0.82),
            run("nano-2", "int8", 1, 5.0, 250.0, 0.80),
            run("nano-2", "int8", 8, 2.0, 300.0, 0.80)]


def test_a_pools_variants_share_its_charts_whichever_device_ran_them():
    points = work_points(in_pool(pooled(), "nanos"))
    assert [(p["variant"], p["batch_size"], p["per_sample_ms"], p["devices"]) for p in points] \
        == [("fp32", 1, 13.0, ["nano-1", "nano-2"]), ("fp32", 8, 6.0, ["nano-1"]),
            ("int8", 1, 5.0, ["nano-2"]), ("int8", 8, 2.0, ["nano-2"])]
    assert latency_series(in_pool(pooled(), "nanos")) == {
        "bert-tiny fp32": [(1, 13.0), (8, 6.0)], "bert-tiny int8": [(1, 5.0), (8, 2.0)]}
    # int8 is faster and smaller, fp32 scores higher: both are on the front.
    assert work(front_points(in_pool(pooled(), "nanos"), "front-latency")) == [
        ("bert-tiny", "int8", 8), ("bert-tiny", "fp32", 8)]


def test_point_labels_are_words_apart():
    points = work_points(in_pool(pooled(), "nanos"))
    assert [point_label(p, points) for p in points] == [
        "bert-tiny fp32 b1", "bert-tiny fp32 b8", "bert-tiny int8 b1", "bert-tiny int8 b8"]
    one_batch = [p for p in points if p["batch_size"] == 1]
    assert point_label(one_batch[1], one_batch) == "bert-tiny int8"


def test_write_report_draws_pools_with_svgs_beside(tmp_path):
    paths = write_report(pooled(), tmp_path, "pooled")
    charts = [f"pool-nanos-{kind}.png"
              for kind in ("front-latency", "front-memory", "latency-batch", "memory")]
    assert [p.name for p in paths] == [*charts, "index.html"]
    assert not list(tmp_path.glob("nano-*"))  # no chart per device unless asked
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    for name in charts:
        svg = (tmp_path / name).with_suffix(".svg")
        assert svg.read_text(encoding="utf-8").lstrip().startswith("<?xml")
        assert f'href="{svg.name}"' in page
    # The researchers' table comes first; fp32 at batch 1 ran on both devices, so it has a
    # row per device (farm table's by_device), where one job each gives a row per variant.
    assert page.index('<table class="research">') < page.index("<img")
    assert research_section(pooled()).count("<tr><td>bert-tiny</td>") == 3
    assert research_section(pooled()[1:]).count("<tr><td>bert-tiny</td>") == 2

    # Repeats: each cell is the median over its job's repeats, as in farm table, and says so.
    first = pooled()[1:]
    again = [dict(r, repeat=2, per_sample_ms=r["per_sample_ms"] + 2.0) for r in first]
    section = research_section(first + again)
    assert "median of 2 repeats" in section
    for r in first:
        if r["batch_size"] == 1:  # the table's cells are at batch size 1
            assert f'<td class="n">{r["per_sample_ms"] + 1.0:.2f}</td>' in section


def test_charts_per_device_only_when_asked(tmp_path):
    rows = [job("nano-1", "tiny", 1, target="nanos", peak_mem_mb=300.0),
            job("nano-2", "tiny", 1, target="nanos", variant="int8", peak_mem_mb=200.0)]
    assert [p.name for p in write_report(rows, tmp_path, "pooled", per_device=True)] == [
        "pool-nanos-memory.png", "nano-1-memory.png", "nano-2-memory.png", "index.html"]


def test_write_report_writes_charts_and_page(rows, tmp_path):
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    out = tmp_path / "report" / "demo"
    paths = write_report(rows, out, "demo sweep")

    # workstation ran every model at batch 1 only: no latency-by-batch chart for it.
    charts = [f"pool-{name}.png" for name in (
        "nano-emu-1-front-latency-memory", "nano-emu-1-latency-batch", "nano-emu-1-memory",
        "workstation-front-latency", "workstation-front-memory", "workstation-memory")]
    assert [p.name for p in paths] == [*charts, "index.html"]
    assert all(p.parent == out for p in paths)
    for path in paths[:-1]:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        height, width = matplotlib.image.imread(path).shape[:2]
        assert height >= 300 and width >= 400
    assert plt.get_fignums() == open_before

    page = (out / "index.html").read_text(encoding="utf-8")
    assert re.findall(r'<img src="([^"]+)"', page) == charts
    assert "<script" not in page and "http" not in page and "<link" not in page
    jobs = page[page.index("<details>"):]
    for model in {r["model"] for r in rows}:
        assert f"<td>{model}</td>" in jobs
    assert jobs.count("<tr class=") == len(rows)
    assert "model error: &lt;boom&gt; &amp; more" in page
    assert "<boom>" not in page
    assert "<td>nano-emu-1</td><td>pool nano-emu-1</td><td>7 of 9</td><td>2048</td>" in page


def test_a_pool_with_nothing_measured_has_no_charts(tmp_path):
    rows = [job("nano-1", "bert-tiny", 1, status="failed", target="nanos"),
            job("nano-1", "bert-mini", 1, per_sample_ms=3.0, target="nanos")]
    assert write_report(rows, tmp_path, "nothing")[-1].name == "index.html"
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.svg"))


def test_write_report_escapes_what_it_shows(tmp_path):
    rows = [job("nano-emu-1", "<b>mine</b>", 1, per_sample_ms=1.0, flops=1e9)]
    page = write_report(rows, tmp_path, "a & b")[-1].read_text(encoding="utf-8")
    assert "<td>&lt;b&gt;mine&lt;/b&gt;</td>" in page
    assert "<b>" not in page
    assert "<title>a &amp; b</title>" in page


def test_write_report_refuses_nothing_and_unsafe_device_names(tmp_path):
    with pytest.raises(ValueError, match="no results to report"):
        write_report([], tmp_path, "empty")
    with pytest.raises(ValueError, match="cannot name a chart file"):
        write_report([job("../etc", "bert-tiny", 1)], tmp_path / "out", "bad")
    assert not (tmp_path / "out").exists()


def test_early_exit_charts_pool_the_devices_of_a_target(tmp_path):
    """A pooled sweep lands fp32 on one device and its early exit or int8 on another: the
    early-exit chart of the pool holds them all, one chart per pool, not per device."""
    from farm.exits import exit_curves, static_points

    spec = ('{"precision": "fp32", "execution": "eager", "methods": [["early_exit", '
            '{"policy": "entropy", "threshold": %s, "padding": "none"}]]}')
    exits = [job(device, "tiny", 1, target="nanos", variant=f"ee-{t}", score=score,
                 variant_spec=spec % t, exit_layer_mean=layer, exit_example_ms=ms,
                 exit_flops_mean=layer * 1e8, per_sample_ms=ms, flops=4e8)
             for device, t, score, layer, ms in (("nano-1", 0.1, 0.9, 3.5, 3.0),
                                                 ("nano-2", 0.4, 0.8, 1.5, 1.5))]
    static = [job("nano-2", "tiny", 1, target="nanos", score=0.91, per_sample_ms=4.0, flops=4e8),
              job("nano-1", "tiny", 1, target="nanos", variant="int8", score=0.88,
                  per_sample_ms=2.0, flops=4e8),
              job("desk", "tiny", 1, target="desk", score=0.95, per_sample_ms=1.0, flops=4e8)]
    rows = exits + static
    (curve,) = exit_curves(rows, "nanos", "ms").values()
    assert [p["row"]["device"] for p in curve] == ["nano-2", "nano-1"]  # by latency
    assert sorted(p["row"]["variant"] for p in static_points(rows, "nanos", "ms")) == \
        ["fp32", "int8"]
    paths = write_report(rows, tmp_path, "pooled")
    assert [p.name for p in paths if "exit" in p.name] == [
        "pool-nanos-exit-latency.png", "pool-nanos-exit-flops.png"]
    assert not list(tmp_path.glob("pool-desk-exit-*"))
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    (section,) = re.findall(r"<section><h2>pool nanos</h2>.*?</section>", page, re.DOTALL)
    assert 'src="pool-nanos-exit-latency.png"' in section


def spec(*methods, precision="fp32") -> str:
    """A variant_spec: (method, params) pairs in order."""
    return json.dumps({"precision": precision, "execution": "eager",
                       "methods": [[m, p] for m, p in methods]})


HEADS = spec(("prune_heads", {"fraction": 0.5}))


def method_rows(pool: str = "nanos") -> list[dict]:
    """tiny's eager fp32 and its variants on two devices of a pool: fp32 at 10 ms, 1 GFLOP and
    100 M parameters on nano-1 and at 20 ms on nano-2; heads-50 at 8 and 10 ms, 0.5 GFLOP and
    50 M parameters (speed-ups 1.25 and 2, FLOPs and parameters halved); int8 on nano-1 only at
    5 ms, computing what fp32 does. The rest has no point."""
    def run(device, variant, ms, flops=1e9, params=1e8, model="tiny", **more):
        return job(device, model, 1, target=pool, variant=variant, per_sample_ms=ms,
                   flops=flops, params=params, **more)

    return [
        run("nano-1", "fp32", 10.0), run("nano-2", "fp32", 20.0),
        run("nano-1", "heads-50", 8.0, 5e8, 5e7, variant_spec=HEADS),
        run("nano-2", "heads-50", 10.0, 5e8, 5e7, variant_spec=HEADS),
        run("nano-1", "int8", 5.0),
        # An early exit: it has charts of its own.
        run("nano-1", "ee-0.2", 2.0, 4e8, variant_spec=spec(("early_exit", {
            "policy": "entropy", "threshold": 0.2, "padding": "none"})), exit_layer_mean=1.5),
        # Failed, with figures that would top the chart.
        run("nano-2", "rank-25", 0.1, 1e7, 1e6, status="failed",
            variant_spec=spec(("low_rank", {"rank": 0.25}))),
        # No parameters counted: no point on either chart.
        run("nano-1", "kron", 9.0, 1e8, params=None, variant_spec=spec(("kronecker", {}))),
        # No eager fp32 of bert-mini to compare against.
        run("nano-1", "heads-50", 4.0, 5e8, 5e7, model="bert-mini", variant_spec=HEADS),
        # Another pool, whose fp32 baseline ran in this one only: other hardware, no point.
        job("desk", "tiny", 1, target="desk", variant="heads-50", variant_spec=HEADS,
            per_sample_ms=1.0, flops=5e8, params=5e7),
    ]


def test_method_points_are_medians_over_the_pools_devices():
    points = method_points(method_rows(), "nanos")
    work = {"model": "tiny", "task": "synthetic", "batch_size": 1, "seq_len": 128}
    assert points == [
        {**work, "variant": "heads-50", "method": "prune_heads",
         "speedup": pytest.approx((10 / 8 + 20 / 10) / 2), "flops_reduction": 2.0,
         "params_reduction": 2.0, "devices": ["nano-1", "nano-2"], "n": 2},
        {**work, "variant": "int8", "method": PLAIN, "speedup": 2.0, "flops_reduction": 1.0,
         "params_reduction": 1.0, "devices": ["nano-1"], "n": 1},
    ]
    assert method_points(method_rows(), "desk") == []
    assert [method_label(p, points) for p in points] == ["heads-50", "int8"]


def test_method_points_pair_each_repeat_with_the_baselines_same_repeat():
    """Repeat 1 against fp32's repeat 1, repeat 2 against its repeat 2; fp32's repeat 3
    failed, so heads-50's repeat 3 is set against compare()'s choice, fp32's first done."""
    rows = [job("nano-1", "tiny", 1, target="nanos", variant=variant, variant_spec=variant_spec,
                repeat=repeat, per_sample_ms=ms, flops=flops, params=1e8, status=status)
            for variant, variant_spec, flops, repeat, ms, status in (
                ("fp32", None, 1e9, 1, 10.0, "done"),
                ("fp32", None, 1e9, 2, 20.0, "done"),
                ("fp32", None, 1e9, 3, None, "failed"),
                ("heads-50", HEADS, 5e8, 1, 8.0, "done"),
                ("heads-50", HEADS, 5e8, 2, 10.0, "done"),
                ("heads-50", HEADS, 5e8, 3, 5.0, "done"))]
    (point,) = method_points(rows, "nanos")
    # Speed-ups 1.25, 2 and 2; against repeat 1 alone they would be 1.25, 1 and 2.
    assert (point["speedup"], point["n"], point["devices"]) == (2.0, 3, ["nano-1"])


def test_method_labels_name_what_differs_between_points():
    points = [{"model": m, "variant": "int8", "task": "sst2", "batch_size": b, "seq_len": 128}
              for m, b in (("tiny", 1), ("mini", 8))]
    assert [method_label(p, points) for p in points] == ["tiny int8 b1", "mini int8 b8"]


def test_write_report_draws_each_pools_methods_against_fp32(tmp_path):
    """A sweep over every device (target *) draws one pool's charts, pool-all-*."""
    paths = write_report(method_rows("*"), tmp_path, "compression")
    charts = ["pool-all-methods-flops.png", "pool-all-methods-params.png"]
    assert [p.name for p in paths if "methods" in p.name] == charts
    for name in charts:
        assert (tmp_path / name).read_bytes()[:8] == PNG_SIGNATURE
        height, width = matplotlib.image.imread(tmp_path / name).shape[:2]
        assert height >= 300 and width >= 400
    assert not list(tmp_path.glob("pool-desk-*"))  # no point in the desk pool

    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    (section,) = re.findall(r"<section><h2>all devices</h2>.*?</section>", page, re.DOTALL)
    assert re.findall(r'<img src="([^"]+)"', section) == charts
    assert "below the diagonal: the method saved more FLOPs than time" in section


def test_the_methods_charts_need_a_variant_that_saved_flops_or_parameters(tmp_path):
    """int8 and streaming keep fp32's FLOPs and parameters: a chart of their speed-up against a
    reduction that is 1x for all of them says nothing, and is not drawn; one pruned variant
    draws both."""
    rows = [dict(r, flops=2e9, params=4e6) for r in pooled()]
    names = [p.name for p in write_report(rows, tmp_path / "plain", "plain")]
    assert not [n for n in names if "methods" in n]
    pruned = job("nano-1", "bert-tiny", 1, target="nanos", variant="heads-50",
                 variant_spec='{"execution": "eager", "methods": [["prune_heads", '
                              '{"fraction": 0.5}]], "precision": "fp32"}',
                 per_sample_ms=9.0, peak_mem_mb=380.0, score=0.8, metric="accuracy",
                 flops=1.5e9, params=3.5e6)
    names = [p.name for p in write_report(rows + [pruned], tmp_path / "pruned", "pruned")]
    assert {"pool-nanos-methods-flops.png", "pool-nanos-methods-params.png"} <= set(names)


def test_a_sweep_of_two_tasks_has_fronts_per_task_with_that_tasks_points_only(tmp_path):
    """A score means nothing across tasks: each task its own fronts, drawn from its own jobs."""
    from farm.report import main_charts, of_task

    rows = pooled() + [dict(r, task="mnli-m", score=r["score"] - 0.1,
                            job_key=r["job_key"] + "-mnli") for r in pooled()[:3]]
    kinds = [c.suffix for c in main_charts(rows) if "front" in c.suffix]
    assert kinds == ["mnli-m-front-latency", "mnli-m-front-memory",
                     "synthetic-front-latency", "synthetic-front-memory"]
    names = [p.name for p in write_report(rows, tmp_path, "tasks")]
    assert {f"pool-nanos-{k}.png" for k in kinds} <= set(names)
    on_mnli = front_points(of_task("mnli-m", in_pool(rows, "nanos")), "front-latency")
    assert {p["task"] for p in on_mnli} == {"mnli-m"} and {p["variant"] for p in on_mnli} == {
        "fp32"}


@pytest.mark.parametrize("pools", [1, 2])
def test_charts_drawn_side_by_side_are_the_same_files(tmp_path, pools):
    """`farm report` draws its charts in forked processes (processes=), a pool's too: the very
    files one process writes (the SVGs too: no date, no random ids), in the same order; and it
    tells of each chart as it is done."""
    import os

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: the charts are drawn one after another whatever is asked")
    xeons = [dict(r, target="xeons", device=r["device"].replace("nano", "xeon"),
                  job_key="x" + r["job_key"]) for r in pooled()]
    rows = pooled() + (xeons if pools == 2 else [])
    told = []
    alone = write_report(rows, tmp_path / "alone", "pooled", processes=1)
    together = write_report(rows, tmp_path / "together", "pooled", processes=2,
                            on_chart=lambda done, of: told.append((done, of)))
    assert [p.name for p in together] == [p.name for p in alone]
    assert "pool-nanos-memory.png" in {p.name for p in alone}
    assert ("pool-xeons-memory.png" in {p.name for p in alone}) == (pools == 2)
    files = sorted(p.name for p in (tmp_path / "alone").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "together").iterdir())
    assert {f.rsplit(".", 1)[1] for f in files} == {"png", "svg", "html"}
    for name in files:
        assert (tmp_path / "alone" / name).read_bytes() == \
            (tmp_path / "together" / name).read_bytes(), name
    # (0, all) first, then one more as each is written
    charts = len(together) - 1  # the page is no chart
    assert told == [(done, charts) for done in range(charts + 1)]
