"""The researchers' table (farm.tables) and the full export (farm.export), from hand-made rows."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from farm.export import export_rows
from farm.tables import research_table, to_csv, to_latex, to_markdown, to_rich

COLUMNS = (
    "sweep", "job_key", "device", "target", "model", "variant", "task", "batch_size",
    "seq_len", "status", "error", "failure", "attempts", "started_at", "finished_at", "p50_ms",
    "p90_ms", "p95_ms", "p99_ms", "mean_ms", "stdev_ms", "iters", "per_sample_ms",
    "throughput", "peak_mem_mb", "container_peak_mb", "process_peak_mb", "memory_limit_mb",
    "load_s", "flops", "params", "energy_mj", "metric", "score", "cuda_peak_mb",
    "flops_method", "avg_power_mw", "idle_power_mw", "energy_source", "board_ram_peak_mb",
    "job_s", "window_s")


def result(model, variant, task, batch_size=1, status="done", device="nano-emu-1", **figures):
    row = dict.fromkeys(COLUMNS)
    row.update(sweep="paper", job_key=f"{model}-{variant}-{task}-b{batch_size}-{device}",
               device=device, target="nano-2gb", model=model, variant=variant, task=task,
               batch_size=batch_size, seq_len=128, status=status, attempts=1,
               started_at="2026-11-21 10:00:00.250000", finished_at=datetime(2026, 11, 21, 10, 1))
    if status == "done":
        row.update(metric=None if task == "synthetic" else "accuracy", flops_method="analytic")
    row.update(figures)
    return row


@pytest.fixture
def rows():
    """Two tasks, two models, two variants; bert-mini int8 sst2 ended oom, bert_tiny fp32
    mnli has no score, bert_tiny fp32 sst2 was also measured at batch 8, bert-mini fp32 mnli
    only at batch 8."""
    return [
        result("bert_tiny", "fp32", "sst2", score=0.8125, per_sample_ms=1.234, peak_mem_mb=301.0),
        result("bert_tiny", "fp32", "sst2", 8, score=0.8125, per_sample_ms=0.5, peak_mem_mb=350.0),
        result("bert_tiny", "int8", "sst2", score=0.79, per_sample_ms=0.9, peak_mem_mb=280.0),
        result("bert-mini", "fp32", "sst2", score=0.85, per_sample_ms=3.5, peak_mem_mb=410.0),
        result("bert-mini", "int8", "sst2", status="oom", error="killed at 2048 MiB",
               failure="job", peak_mem_mb=2048.0),
        result("bert_tiny", "fp32", "mnli", score=None, per_sample_ms=1.3, peak_mem_mb=305.0),
        result("bert_tiny", "int8", "mnli", score=0.61, per_sample_ms=0.95, peak_mem_mb=282.0),
        result("bert-mini", "fp32", "mnli", 8, score=0.7, per_sample_ms=2.0, peak_mem_mb=600.0),
        result("bert-mini", "int8", "mnli", score=0.69, per_sample_ms=2.9, peak_mem_mb=390.0),
    ]


def table_lines(markdown: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")]
            for line in markdown.splitlines() if line.startswith("|")]


def test_markdown_has_one_row_per_model_variant_and_a_column_group_per_task(rows):
    header, rule, *body = table_lines(to_markdown(research_table(rows)))
    assert header == ["model", "variant", "sst2 accuracy", "sst2 ms/sample", "sst2 MiB",
                      "mnli accuracy", "mnli ms/sample", "mnli MiB"]
    assert rule == [":---"] * 2 + ["---:"] * 6
    assert [row[:2] for row in body] == [["bert_tiny", "fp32"], ["bert_tiny", "int8"],
                                         ["bert-mini", "fp32"], ["bert-mini", "int8"]]
    assert body[0][2:] == ["0.812", "1.23", "301", "–", "1.30", "305"]  # batch 1, not 8
    assert body[2][5:] == ["0.700", "2.00 (b8)", "600"]
    assert body[3][2:5] == ["oom", "oom", "oom"]
    assert "device" not in header


def test_caption_names_the_batch_size_the_figures_are_taken_at(rows):
    assert "batch size 1" in research_table(rows).caption
    table = research_table(rows, batch_size=8)
    assert "batch size 8" in table.caption
    body = table_lines(to_markdown(table))[2:]
    assert body[0][2:5] == ["0.812", "0.50", "350"]
    assert body[1][2:5] == ["–", "–", "–"]      # bert_tiny int8 never ran at batch 8


def test_csv_parses_back_with_task_column_names(rows):
    header, *body = list(csv.reader(io.StringIO(to_csv(research_table(rows)))))
    assert header[:6] == ["model", "variant", "sst2/accuracy", "sst2/ms_per_sample",
                          "sst2/peak_mib", "sst2/batch_size"]
    assert len(body) == 4
    cells = {(r[0], r[1]): dict(zip(header, r)) for r in body}
    assert cells["bert_tiny", "fp32"]["sst2/ms_per_sample"] == "1.234"
    assert cells["bert_tiny", "fp32"]["mnli/accuracy"] == ""
    assert cells["bert-mini", "int8"]["sst2/peak_mib"] == "oom"
    assert cells["bert-mini", "fp32"]["mnli/batch_size"] == "8"


def test_latex_groups_tasks_and_escapes_names(rows):
    latex = to_latex(research_table(rows))
    assert r"\multicolumn{3}{c}{sst2}" in latex and r"\multicolumn{3}{c}{mnli}" in latex
    assert r"\cmidrule(lr){3-5} \cmidrule(lr){6-8}" in latex
    assert r"bert\_tiny" in latex and "bert_tiny" not in latex.replace(r"bert\_tiny", "")
    assert r"\multicolumn{3}{c}{oom}" in latex
    assert latex.count(r"\\") == 2 + 4
    for marker in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{llrrrrrr}"):
        assert marker in latex


def test_latex_escapes_special_characters():
    rows = [result("a%b&c#d$e", "fp32", "my_task", score=0.5, per_sample_ms=1.0, peak_mem_mb=1)]
    latex = to_latex(research_table(rows))
    assert r"a\%b\&c\#d\$e" in latex and r"\multicolumn{3}{c}{my\_task}" in latex


def test_rich_table_renders_task_groups(rows):
    console = Console(record=True, width=200)
    console.print(to_rich(research_table(rows)))
    text = console.export_text()
    for word in ("sst2", "mnli", "accuracy", "ms/sample", "bert_tiny", "oom", "(b8)"):
        assert word in text
    assert text.index("sst2") < text.index("mnli")


def test_a_pools_devices_share_a_row_unless_two_ran_the_same_work(rows):
    """A pooled sweep spreads one variant's jobs over the pool: one row per variant, however
    the jobs fell; a row per device only where two devices ran the same work."""
    spread = [dict(r, device=f"nano-0{i % 2 + 1}") for i, r in enumerate(rows)]
    assert research_table(spread).keys == ("model", "variant")
    assert len(research_table(spread).rows) == len({(r["model"], r["variant"]) for r in rows})
    rows.append(result("bert_tiny", "fp32", "sst2", device="nano-01", score=0.8125,
                       per_sample_ms=4.0, peak_mem_mb=310.0))
    table = research_table(rows)
    assert table.keys == ("model", "variant", "device")
    header, _, *body = table_lines(to_markdown(table))
    assert header[2] == "device" and len(body) == 5
    with pytest.raises(ValueError, match="by_device=True"):
        research_table(rows, by_device=False)
    assert research_table(rows[:2], by_device=True).keys == ("model", "variant", "device")


def test_export_csv_round_trips(rows, tmp_path):
    latencies = {rows[0]["job_key"]: [1.5, 1.25, 1.0]}
    out = export_rows(rows, latencies, "csv", tmp_path / "results.csv")
    header, *body = list(csv.reader(out.open(newline="")))
    assert header == [*COLUMNS, "latencies_ms"]
    first = dict(zip(header, body[0]))
    assert json.loads(first["latencies_ms"]) == [1.5, 1.25, 1.0]
    assert first["per_sample_ms"] == "1.234" and first["energy_mj"] == ""
    assert first["started_at"] == "2026-11-21T10:00:00.250000+00:00"
    assert dict(zip(header, body[4]))["status"] == "oom" and body[4][-1] == ""


def test_export_csv_of_rows_unalike_writes_every_cell_as_its_text(tmp_path):
    """Rows of different keys (a later row's new key follows), a time in a column not named
    *_at, naive and aware times, a list, bytes, a quote and a comma: each cell as _text writes
    it, times in UTC."""
    rows = [{"job_key": "a", "started_at": datetime(2026, 1, 1, 12), "x": 1.5, "l": [1, 2],
             "b": True, "s": 'q,"w'},
            {"job_key": "b", "started_at": "2026-01-01T12:00:00", "x": None,
             "when": datetime(2026, 1, 2, tzinfo=timezone(timedelta(hours=2)))},
            {"job_key": "c", "x": 3, "extra": b"z", "l": None}]
    out = export_rows(rows, {"a": [1, 2.5], "c": [3]}, "csv", tmp_path / "unalike.csv")
    assert out.read_text().splitlines() == [
        "job_key,started_at,x,l,b,s,when,extra,latencies_ms",
        'a,2026-01-01T12:00:00+00:00,1.5,"[1, 2]",True,"q,""w",,,"[1.0, 2.5]"',
        "b,2026-01-01T12:00:00+00:00,,,,,2026-01-01T22:00:00+00:00,,",
        "c,,3,,,,,b'z',[3.0]"]


def test_export_json_round_trips(rows, tmp_path):
    latencies = {rows[0]["job_key"]: [1.5, 1.25, 1.0]}
    out = export_rows(rows, latencies, "json", tmp_path / "results.json")
    back = json.loads(out.read_text())
    assert len(back) == len(rows) and list(back[0]) == [*COLUMNS, "latencies_ms"]
    assert back[0]["latencies_ms"] == [1.5, 1.25, 1.0] and back[1]["latencies_ms"] is None
    assert back[5]["score"] is None and back[0]["score"] == 0.8125
    assert back[0]["finished_at"] == "2026-11-21T10:01:00+00:00"


def test_export_parquet_round_trips(rows, tmp_path):
    latencies = {rows[0]["job_key"]: [1.5, 1.25, 1.0]}
    out = export_rows(rows, latencies, "parquet", tmp_path / "results.parquet")
    table = pq.read_table(out)
    assert table.column_names == [*COLUMNS, "latencies_ms"]
    kind = table.schema.field("latencies_ms").type
    assert pa.types.is_list(kind) and kind.value_type == pa.float64()
    back = table.to_pylist()
    assert back[0]["latencies_ms"] == [1.5, 1.25, 1.0] and back[1]["latencies_ms"] is None
    assert back[5]["score"] is None and back[0]["score"] == 0.8125
    assert back[4]["per_sample_ms"] is None and back[0]["per_sample_ms"] == 1.234
    assert back[0]["started_at"] == datetime(2026, 11, 21, 10, 0, 0, 250000, tzinfo=timezone.utc)


def test_export_refuses_an_unknown_format(rows, tmp_path):
    with pytest.raises(ValueError, match="csv, json, parquet"):
        export_rows(rows, {}, "xlsx", tmp_path / "results.xlsx")


def _repeats(*figures, status=("done",) * 3, scores=(0.8125,) * 3):
    """bert_tiny fp32 sst2 measured once per repeat (`repeats: 3`), each repeat its own job."""
    return [result("bert_tiny", "fp32", "sst2", status=s, repeat=r, job_key=f"k{r}", score=score,
                   per_sample_ms=ms, peak_mem_mb=mib)
            for r, (ms, mib), s, score in zip((1, 2, 3), figures, status, scores)]


def test_a_cell_of_a_sweep_with_repeats_is_the_median_over_them():
    rows = _repeats((1.5, 300.0), (1.0, 310.0), (9.0, 305.0))
    table = research_table(rows)
    _, _, body = table_lines(to_markdown(table))
    assert body[2:] == ["0.812", "1.50", "305"]
    assert "median of 3 repeats" in table.caption
    assert "Every repeat of a job scored the same" in table.caption
    cells = dict(zip(*list(csv.reader(io.StringIO(to_csv(table))))))
    assert (cells["sst2/ms_per_sample"], cells["sst2/peak_mib"]) == ("1.5", "305.0")


def test_repeats_that_did_not_end_done_are_counted_and_differing_scores_named():
    rows = _repeats((1.5, 300.0), (1.0, 310.0), (None, 512.0), status=("done", "done", "oom"),
                    scores=(0.8, 0.9, None))
    table = research_table(rows)
    _, _, body = table_lines(to_markdown(table))
    assert body[2:] == ["0.850", "1.25 (2 of 3)", "305"]
    assert "Scores differ between the repeats of bert_tiny fp32 sst2" in table.caption
    every_one = research_table(_repeats((1.0, 1.0), (1.0, 1.0), (1.0, 1.0), status=("oom",) * 3))
    assert table_lines(to_markdown(every_one))[2][2:] == ["oom"] * 3



def test_memory_is_the_jobs_own_as_in_the_results_table_else_the_containers():
    """One memory figure everywhere: the job's resident peak (memory_mb) where measured, the
    container's peak for older results; farm report's points take the same."""
    from farm.report import work_points

    rows = [result("bert_base", "fp32", "synthetic", per_sample_ms=228.0, memory_mb=818.0,
                   peak_mem_mb=703.0),
            result("bert_base", "int8", "synthetic", per_sample_ms=89.0, peak_mem_mb=469.0)]
    cells = [cells["synthetic"] for _, cells in research_table(rows).rows]
    assert [c.memory_mb for c in cells] == [818.0, 469.0]
    assert [p["memory"] for p in work_points(rows)] == [818.0, 469.0]


class _Read(dict):
    """A row as `farm table` reads it (farm.readers.table_rows: only its columns). Asking for
    any other column fails the test: from a narrow row it would be None, a measured figure
    shown as not measured."""

    def __init__(self, row: dict, columns: tuple[str, ...]):
        super().__init__((c, row.get(c)) for c in columns)

    def __getitem__(self, column):
        assert column in self, f"the table reads {column!r}, which table_rows leaves out"
        return super().__getitem__(column)

    def get(self, column, default=None):
        assert column in self, f"the table reads {column!r}, which table_rows leaves out"
        return super().get(column, default)


def test_farm_table_reads_every_column_it_shows(rows):
    """`farm table` reads a few of v_results' columns: the researchers' table and early exit's
    table from those alone say what they say from every column."""
    from farm.exits import TABLE_COLUMNS, exits_table
    from farm.tables import COLUMNS as READ

    spec = ('{"precision": "fp32", "execution": "eager", "methods": [["early_exit", '
            '{"policy": "entropy", "threshold": %s, "padding": "none"}]]}')
    exits = [result("bert_tiny", f"ee-{t}", "sst2", score=score, per_sample_ms=ms,
                    memory_mb=250.0, variant_spec=spec % t, exit_layer_mean=layer, exit_layers=2,
                    exit_expected_saving=1 - layer / 2, exit_speedup=2 / layer,
                    exit_example_ms=ms, exit_example_p90_ms=ms * 1.5, exit_full_ms=2 * ms,
                    exit_flops_mean=layer * 1e8, exit_histogram="[3, 1]", score_note=None)
             for t, score, layer, ms in ((0.1, 0.8, 1.75, 1.0), (0.4, 0.75, 1.25, 0.7))]
    every = [*rows, *_repeats((1.5, 300.0), (1.0, 310.0), (9.0, 305.0)), *exits]
    read = [_Read(r, READ + TABLE_COLUMNS) for r in every]

    def printed(table) -> str:
        console = Console(width=200, record=True, color_system=None)
        console.print(table)
        return console.export_text()

    for by_device in (None, True):
        whole, narrow = research_table(every, by_device), research_table(read, by_device)
        assert narrow == whole
        assert printed(to_rich(narrow, title="t")) == printed(to_rich(whole, title="t"))
    assert "entropy 0.4" in printed(exits_table("exits", read))
    assert printed(exits_table("exits", read)) == printed(exits_table("exits", every))


def test_a_table_of_one_unscored_task_names_it_once_and_fits_80_columns():
    """`farm table` of a synthetic sweep (no labels: no score) on a terminal of 80 columns:
    the task in the title, one-line headers, no column of – alone, every figure whole."""
    rows = [result(model, variant, "synthetic", seq_len=seq, per_sample_ms=ms,
                   peak_mem_mb=mib, device=device, target="pool")
            for model, variant, device, seq, ms, mib in (
                ("bert-medium", "stream+int8", "nano-1", 512, 39.3012, 564.0),
                ("bert-medium", "stream+int8", "nano-2", 64, 5.0712, 508.0),
                ("bert-tiny", "fp32", "nano-1", 512, 0.5612, 207.0))]
    console = Console(width=80, record=True, color_system=None)
    console.print(to_rich(research_table(rows), title="sweep s"))
    text = console.export_text()
    assert "sweep s · synthetic" in text and "…" not in text
    assert max(map(len, text.splitlines())) <= 80
    head = next(line for line in text.splitlines() if "model" in line)
    assert head.split() == ["┃model", "┃", "variant", "┃", "seq", "┃", "ms/sample", "┃",
                            "MiB┃"]
    for model, variant, seq, ms, mib in (("bert-medium", "stream+int8", 512, "39.30", "564"),
                                         ("bert-tiny", "fp32", 512, "0.56", "207")):
        line = next(line for line in text.splitlines()
                    if f" {variant} " in line and f" {seq} " in line and model in line)
        assert f" {ms} " in line and f" {mib}" in line
    assert "No job of synthetic was scored" in text and "first column" not in text
    # a scored task keeps its score column, and two tasks keep their two-line headers
    scored = [*rows, result("bert-tiny", "fp32", "sst2", score=0.75, per_sample_ms=1.0,
                            peak_mem_mb=200.0, seq_len=512, device="nano-1", target="pool")]
    console = Console(width=200, record=True, color_system=None)
    console.print(to_rich(research_table(scored), title="sweep s"))
    text = console.export_text()
    assert "sst2" in text and "0.750" in text and "sweep s ·" not in text


def test_a_sweep_of_two_pools_gets_a_row_per_pool_not_per_device(rows):
    """A sweep on two pools runs each work once per pool, on whichever of its devices was free:
    a row per pool (its target), each cell its pool's job, not a row per device."""
    pooled = [dict(r, device=f"{pool}-{i % 2 + 1}", target=pool,
                   job_key=f"{r['job_key']}-{pool}", per_sample_ms=(r["per_sample_ms"] or 0) * k)
              for pool, k in (("nano", 4.0), ("xeon", 1.0)) for i, r in enumerate(rows)]
    table = research_table(pooled)
    assert table.keys == ("model", "variant", "target")
    pairs = {(r["model"], r["variant"]) for r in rows}
    assert len(table.rows) == 2 * len(pairs)
    by_key = dict(table.rows)
    tiny = [r for r in rows if (r["model"], r["variant"], r["task"], r["batch_size"]) ==
            ("bert_tiny", "fp32", "sst2", 1)][0]
    for pool, k in (("nano", 4.0), ("xeon", 1.0)):
        assert by_key[("bert_tiny", "fp32", pool)]["sst2"].per_sample_ms == \
            tiny["per_sample_ms"] * k
    # no merging across pools where asked not to, and a row per device where asked
    with pytest.raises(ValueError):
        research_table(pooled, by_device=False)
    assert research_table(pooled, by_device=True).keys == ("model", "variant", "device")
