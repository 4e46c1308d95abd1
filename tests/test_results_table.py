"""The end-of-run table of `farm submit` (farm.results_view.results_table): an oom row shows the
memory its container reached when the kernel killed the job, and every variant its Δlogit
against the same model's eager fp32 on the same work: from the sweep's own rows, else from
another sweep of the database (farm.store.queries.baselines_elsewhere) where that one ran the
same weights on the same kind of device."""
from __future__ import annotations

import contextlib
import itertools
import json

import pytest
from rich.console import Console

from farm.comparisons import compare
from farm.results_view import methods_table, results_table, streaming_table
from farm.results import V_RESULTS, Status
from farm.store import Store, queries
from farm.store.clock import utcnow
from farm.store.readonly import ReadOnly
from farm.store.schema import Job, Sweep

FP32_LOGITS = [[0.125, -0.25]]
INT8_LOGITS = [[0.1875, -0.25]]  # 0.0625 off fp32's: Δlogit 6.2e-02


def v_result(variant: str, status: str = Status.DONE, **figures) -> dict:
    """A v_results row as the view returns it: every column, None where not measured."""
    row = dict.fromkeys(c.name for c in V_RESULTS)
    row.update(sweep="s", job_key=f"s-{variant}", device="box-1", target="box-1",
               model="bert-tiny", variant=variant, task="synthetic", batch_size=1, seq_len=128,
               status=status, attempts=1, repeat=1)
    if status == Status.DONE:
        row.update(p50_ms=2.0, per_sample_ms=2.0, peak_mem_mb=420.0, memory_mb=400.0,
                   memory_limit_mb=1024.0, headroom_mb=624.0, flops=117_000_000,
                   params=4_390_000, logits_json=json.dumps(FP32_LOGITS))
    row.update(figures)
    return row


def _oom(**figures) -> dict:
    """What a real oom holds (bert-base fp32 in a 256 MiB cgroup): the container's peak and
    limit, no memory of the job's own, no headroom."""
    return v_result("fp32", Status.OOM, model="bert-base", job_key="s-oom", peak_mem_mb=256.0,
                    container_peak_mb=256.0, memory_limit_mb=256.0, anon_mb=0.0,
                    error="killed by the kernel's OOM killer at the 256 MiB limit (peak 256 MiB)",
                    **figures)


def _text(table) -> str:
    """The table as printed, and its caption's words once more on one line (a caption wraps
    at the table's width)."""
    console = Console(width=250, record=True, color_system=None)
    console.print(table)
    text = console.export_text()
    return text + " ".join(text.split("┘")[-1].split())


def _cells(table, row: int) -> dict[str, str]:
    """A row's cells as the table holds them (Rich markup), by column header."""
    return {str(c.header): c._cells[row] for c in table.columns}


def _line(text: str, *words: str) -> list[str]:
    """The cells of the table's line holding every word."""
    (line,) = [line.replace("┃", "│") for line in text.splitlines()
               if line[:1] in "│┃" and all(w in line for w in words)]
    return [cell.strip() for cell in line.strip("│").split("│")]


# --- An oom row --------------------------------------------------------------------------------

def test_an_oom_row_shows_the_peak_at_the_kill_in_red_and_no_headroom_left():
    table = results_table("sweep s", [v_result("fp32"), _oom()])
    oom = _cells(table, 1)
    assert (oom["memory MiB"], oom["limit MiB"], oom["headroom MiB"]) == (
        "[red]256[/]", "256", "[red]0[/]")
    done = _cells(table, 0)
    assert (done["memory MiB"], done["headroom MiB"]) == ("400", "624")
    assert "container's peak when the kernel killed the job" in _text(table)


def test_an_oom_row_is_red_where_the_table_shows_container_peaks_only():
    """Rows from before 0012 have no memory of the job's own: the column is the peak."""
    before = v_result("fp32", memory_mb=None, headroom_mb=None)
    oom = _cells(results_table("sweep s", [before, _oom()]), 1)
    assert (oom["peak MiB"], oom["headroom MiB"]) == ("[red]256[/]", "[red]0[/]")


# --- At 80 columns --------------------------------------------------------------------------

def test_at_80_columns_the_figures_that_matter_least_are_left_out_never_cut():
    """farm submit's table on a terminal of 80 columns: parameters, FLOPs, the limit and the
    headroom go first, every figure left is whole (Rich cut them all to `…`); a column of no
    figure (p50 of a one-call job) is never shown; the status stays where a job is not done."""
    rows = [v_result(variant, device="nano-emu-1", per_sample_ms=ms, p50_ms=None,
                     job_key=f"s-{variant}", host_busy=busy,
                     logits_json=json.dumps(INT8_LOGITS if variant != "fp32" else FP32_LOGITS))
            for variant, ms, busy in (("fp32", 12.3456, 1), ("stream+int8", 4.5678, 0))]

    def printed(rows) -> str:
        console = Console(width=80, record=True, color_system=None)
        console.print(results_table("sweep s", rows, width=80))
        return console.export_text()

    text = printed(rows)
    head = next(line for line in text.splitlines() if "variant" in line)
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text
    assert "params" not in head and "GFLOP" not in head and "p50" not in head
    assert "ms/sample" in head and "memory MiB" in head and "doubt" in head
    assert "status" not in head  # every job done: the line under the table says so
    for ms in ("12.35", "4.57"):  # the names may wrap; every figure is whole
        line = next(line for line in text.splitlines() if f" {ms} " in line)
        assert " 400 " in line
    with_oom = printed([*rows, _oom(device="nano-emu-1")])
    head = next(line for line in with_oom.splitlines() if "variant" in line)
    assert "status" in head and " oom " in with_oom
    assert max(map(len, with_oom.splitlines())) <= 80 and "…" not in with_oom
    # the caption explains the columns shown, and names those left out (Δlogit here)
    caption = " ".join(with_oom.split("┘")[-1].split())
    assert "Δlogit" not in head and "Δlogit: max" not in caption
    assert "left out at 80 columns:" in caption and "Δlogit" in caption
    # wide: every column with a figure in it
    wide = _text(results_table("sweep s", rows))
    assert all(h in wide for h in ("params M", "GFLOP/sample", "limit MiB", "status"))
    assert "p50" not in wide


def test_at_80_columns_the_methods_and_streaming_tables_keep_what_they_compare():
    """The tables of methods and of streamed variants at 80 columns: the time against fp32
    (and memory, Δlogit) stay whole, what matters least is left out and the caption names it;
    wide, every column is there and no caption says so."""
    heads = json.dumps({"precision": "fp32", "execution": "eager",
                        "methods": [["prune_heads", {"fraction": 0.5}]]}, sort_keys=True)
    rows = [v_result("fp32", device="nano-emu-1", job_key="f", per_sample_ms=4.0,
                     model_memory_mb=26.0),
            v_result("heads-50", device="nano-emu-1", job_key="h", variant_spec=heads,
                     per_sample_ms=2.88, model_memory_mb=20.0, params=3_890_000,
                     logits_json=json.dumps(INT8_LOGITS)),
            v_result("stream+int8", device="nano-emu-1", job_key="s", per_sample_ms=3.16,
                     model_memory_mb=9.0, bytes_read=4_000_000, read_ms=0.5, read_wait_ms=0.1,
                     compute_ms=3.0, logits_json=json.dumps(FP32_LOGITS))]

    def printed(table, width) -> str:
        console = Console(width=width, record=True, color_system=None)
        console.print(table)
        return console.export_text()

    for draw, figures, least in (
            (methods_table, ("0.72", "6.2e-02"), ("params M", "GFLOP/sample")),
            (streaming_table, ("0.79",), ("compute ms", "read ms", "wait ms", "MB/pass"))):
        narrow = printed(draw("sweep s", rows, width=80), 80)
        head = next(line for line in narrow.splitlines() if "variant" in line)
        assert max(map(len, narrow.splitlines())) <= 80 and "…" not in narrow
        assert all(f" {f} " in narrow or f" {f}│" in narrow for f in figures)
        assert all(h not in head for h in least) and "left out at 80 columns" in narrow
        wide = printed(draw("sweep s", rows, width=250), 250)
        assert all(h in wide for h in least) and "left out" not in wide


# --- Δlogit ------------------------------------------------------------------------------------

def test_int8_has_its_delta_logit_against_fp32_of_the_same_sweep():
    int8 = v_result("int8", logits_json=json.dumps(INT8_LOGITS))
    text = _text(results_table("sweep s", [v_result("fp32"), int8]))
    header = _line(text, "variant", "status")
    assert "Δlogit" in header
    gap = header.index("Δlogit")
    assert _line(text, "int8")[gap] == "6.2e-02"
    assert _line(text, " fp32 ")[gap] == ""  # the baseline itself
    assert "†" not in text
    assert "Δlogit" not in _text(results_table("sweep s", [int8, _oom()]))  # none to be against


def test_a_baseline_of_the_sweep_comes_before_one_from_elsewhere():
    fp32, int8 = v_result("fp32"), v_result("int8", logits_json=json.dumps(INT8_LOGITS))
    other = v_result("fp32", sweep="old", logits_json=json.dumps(INT8_LOGITS))
    elsewhere = {("s", "s-int8"): [other]}
    by_variant = {c.result["variant"]: c for c in compare([fp32, int8], elsewhere)}
    assert by_variant["int8"].baseline is fp32 and not by_variant["int8"].baseline_elsewhere
    alone = compare([int8], elsewhere)[0]
    assert alone.baseline is other and alone.baseline_elsewhere and alone.logit_gap == 0


# --- Baselines from other sweeps, read from a real database -------------------------------------

@pytest.fixture
def store(tmp_path):
    store = Store(str(tmp_path / "farm.db"))
    yield store
    store.close()


def _ran(store: Store, sweep: str, variant: str, logits, *, device: str = "box-1",
         kind: str = "cgroup", model: str = "bert-tiny", path: str | None = None,
         data: dict | None = None, at: float = 1000.0) -> None:
    """One job of `sweep`, stored as a submit stores it and finished done with these logits."""
    now = utcnow()
    key = f"{sweep}-{model}-{variant}-{device}"
    spec = {"target": device, "model": {"name": model, "path": path}, "variant": variant,
            "task": "synthetic", "batch_size": 1, "seq_len": 128, **({"data": data} if data else {})}
    with store._write() as db:
        row = db.query(Sweep).filter_by(name=sweep).one_or_none()
        if row is None:
            row = Sweep(name=sweep, source=f"{sweep}.yaml", spec_json="{}", inventory_json="{}",
                        created_at=now, updated_at=now)
            db.add(row)
            db.flush()
        db.add(Job(sweep_id=row.id, key=key, target=device, model=model, model_path=path,
                   variant=variant, task="synthetic", batch_size=1, seq_len=128,
                   spec_json=json.dumps(spec), status=Status.QUEUED, attempts=0, created_at=now))
        sweep_id = row.id
    store.device_state(device, kind, "idle")
    (job,) = store.runnable_jobs(sweep_id, {key})
    store.job_started(job.id, device)
    store.job_finished(job.id, {
        "status": Status.DONE, "device": device, "started_at": at, "finished_at": at + 1,
        "error": None, "result": {"per_sample_ms": 2.0, "peak_mem_mb": 420.0, "memory_mb": 400.0,
                                  "memory_limit_mb": 1024.0, "logits": logits}})


def _table(store: Store, sweep: str):
    """The sweep's rows, what other sweeps hold for them, and their end-of-run table's text."""
    rows = store.sweep_results(sweep)
    with contextlib.closing(ReadOnly(store.url)) as reader:
        elsewhere = queries.baselines_elsewhere(reader, rows)
    return rows, elsewhere, _text(results_table(f"sweep {sweep}", rows, elsewhere))


def test_int8_of_a_later_sweep_is_against_the_fp32_of_an_earlier_one(store):
    _ran(store, "fp32-first", "fp32", [[9.0, 9.0]], device="box-2", at=1000.0)
    _ran(store, "fp32-then", "fp32", FP32_LOGITS, device="box-2", at=2000.0)  # the newest
    _ran(store, "int8-later", "int8", INT8_LOGITS, at=3000.0)
    rows, elsewhere, text = _table(store, "int8-later")
    assert [c["sweep"] for c in elsewhere[rows[0]["sweep"], rows[0]["job_key"]]] == [
        "fp32-then", "fp32-first"]
    gap = _line(text, "variant", "status").index("Δlogit")
    assert _line(text, "int8")[gap] == "6.2e-02†"
    assert "†: compared with sweep fp32-then on box-2" in text


def test_the_same_device_comes_before_a_newer_result_on_another(store):
    _ran(store, "here", "fp32", FP32_LOGITS, at=1000.0)
    _ran(store, "there", "fp32", [[9.0, 9.0]], device="box-2", at=2000.0)
    _ran(store, "int8-later", "int8", INT8_LOGITS, at=3000.0)
    rows, elsewhere, text = _table(store, "int8-later")
    assert compare(rows, elsewhere)[0].baseline["sweep"] == "here"
    assert "6.2e-02†" in text and "sweep here on box-1" in text


def test_not_against_fp32_from_another_kind_of_device(store):
    _ran(store, "on-a-board", "fp32", FP32_LOGITS, device="nano-1", kind="jetson")
    _ran(store, "int8-later", "int8", INT8_LOGITS, at=2000.0)
    rows, elsewhere, text = _table(store, "int8-later")
    assert elsewhere.get((rows[0]["sweep"], rows[0]["job_key"]), []) == []
    assert "Δlogit" not in text


def test_not_against_a_checkpoint_which_may_hold_other_weights(store):
    """A checkpoint is stored by its path alone: the same path in two sweeps may have held other
    files, and a checkpoint named like a catalog model holds other weights than the catalog's."""
    _ran(store, "tuned", "fp32", FP32_LOGITS, path="/ckpt/bert-tiny-sst2")
    _ran(store, "tuned-int8", "int8", INT8_LOGITS, path="/ckpt/bert-tiny-sst2", at=2000.0)
    _ran(store, "catalog-int8", "int8", INT8_LOGITS, at=3000.0)
    for sweep in ("tuned-int8", "catalog-int8"):
        _, elsewhere, text = _table(store, sweep)
        assert not any(elsewhere.values()) and "Δlogit" not in text


def test_not_against_fp32_of_other_examples(store):
    _ran(store, "sst2-100", "fp32", FP32_LOGITS, data={"digest": "a1", "count": 100})
    _ran(store, "sst2-all", "int8", INT8_LOGITS, data={"digest": "b2", "count": 872}, at=2000.0)
    _, elsewhere, _ = _table(store, "sst2-all")
    assert not any(elsewhere.values())


def test_the_methods_table_marks_a_ratio_against_another_sweep(store):
    _ran(store, "fp32-first", "fp32", FP32_LOGITS)
    _ran(store, "heads", "heads-50", INT8_LOGITS, at=2000.0)
    with store._write() as db:  # a variant with a method, as a submit stores its spec
        db.query(Job).filter_by(variant="heads-50").update({"variant_spec": json.dumps(
            {"execution": "eager", "methods": [["prune_heads", {"fraction": 0.5}]],
             "precision": "fp32"}, sort_keys=True)})
    rows = store.sweep_results("heads")
    with contextlib.closing(ReadOnly(store.url)) as reader:
        elsewhere = queries.baselines_elsewhere(reader, rows)
    text = _text(methods_table("sweep heads: methods against eager fp32", rows, elsewhere))
    cells = _line(text, "heads-50")
    assert "1.00†" in cells and "6.2e-02†" in cells
    assert "sweep fp32-first on box-1" in text


def test_a_ratio_against_another_pools_fp32_is_marked_with_the_device_named():
    """A sweep on two pools whose small one ran out of memory in fp32: its variant's ratio is
    against the other pool's fp32 (perhaps other hardware), marked †, the device named; the
    other pool's own, against its own fp32, unmarked."""
    heads = json.dumps({"precision": "fp32", "execution": "eager",
                        "methods": [["prune_heads", {"fraction": 0.5}]]}, sort_keys=True)
    rows = [v_result("fp32", Status.DONE, device="big-1", target="big", job_key="fp32-big"),
            v_result("heads-50", Status.DONE, device="big-1", target="big", job_key="h-big",
                     per_sample_ms=1.0, variant_spec=heads),
            v_result("fp32", Status.OOM, device="small-1", target="small", job_key="fp32-s"),
            v_result("heads-50", Status.DONE, device="small-1", target="small", job_key="h-s",
                     per_sample_ms=3.0, variant_spec=heads)]
    text = _text(methods_table("sweep s: methods against eager fp32", rows, {}))
    small = next(line for line in text.splitlines() if "heads-50" in line and "small-1" in line)
    big = next(line for line in text.splitlines() if "heads-50" in line and "big-1" in line)
    assert "1.50†" in small and "0.50" in big and "0.50†" not in big
    assert "†: compared with sweep s on big-1" in text


# --- compare()'s choice of baseline over a grid -------------------------------------------------

def _spec(precision: str, execution: str, methods: list) -> str:
    return json.dumps({"precision": precision, "execution": execution, "methods": methods})


def _chosen_by_scan(rows: list[dict], row: dict, precision: str, methods: list) -> dict | None:
    """compare()'s rule, row by row over every row: the first done eager result of the same
    work, precision and methods on the row's device, else the first on a device of the row's
    pool (its target), else the first on any device."""
    named = {"fp32": _spec("fp32", "eager", []), "int8": _spec("int8", "eager", []),
             "stream": _spec("fp32", "stream", [])}

    def fits(r):
        spec = json.loads(r["variant_spec"] or named[r["variant"]])
        return (r["status"] == Status.DONE
                and (spec["precision"], spec["execution"], spec["methods"]) ==
                (precision, "eager", methods)
                and all(r[k] == row[k] for k in ("model", "task", "batch_size", "seq_len")))

    done = [r for r in rows if fits(r)]
    return ([r for r in done if r["device"] == row["device"]] or
            [r for r in done if r["target"] == row["target"]] or done or [None])[0]


def test_each_row_gets_the_baseline_a_scan_of_every_row_finds():
    """A grid of works, devices, repeats and variants (methods with parameters, a streamed
    one, failed baselines, a work that one device never finished) on two pools: every row's
    baseline and reference are those the rule picks when every row is looked at; one from
    another pool is marked as from elsewhere."""
    heads, quarter = [["prune_heads", {"fraction": 0.5}]], [["prune_heads", {"fraction": 0.25}]]
    variants = [("fp32", None), ("int8", None), ("stream", None),
                ("heads-50", _spec("fp32", "eager", heads)),
                ("heads-25", _spec("fp32", "eager", quarter)),
                ("heads-50s", _spec("fp32", "stream", heads)),
                ("heads-25s", _spec("fp32", "stream", quarter))]
    rows = []
    # big-1 comes first: a row of the boxes finds it before its own pool's in a plain scan
    pools = {"big-1": "big", "box-1": "boxes", "box-2": "boxes", "box-3": "boxes"}
    for batch, seq, device, repeat, (name, spec) in itertools.product(
            (1, 8), (64, 128), pools, (1, 2), variants):
        # box-2's fp32 failed at batch 8 (its pool's box-1 and box-3 did it), and every box's
        # at seq 128 batch 1; box-3 never ran heads-50 at seq 64
        if device == "box-3" and name == "heads-50" and seq == 64:
            continue
        failed = name == "fp32" and (device == "box-2" and batch == 8 or
                                     device != "big-1" and (batch, seq) == (1, 128))
        rows.append(v_result(name, Status.FAILED if failed else Status.DONE, device=device,
                             target=pools[device], batch_size=batch, seq_len=seq,
                             repeat=repeat, variant_spec=spec,
                             job_key=f"s-{name}-{device}-b{batch}-s{seq}-r{repeat}"))
    compared = compare(rows)
    assert [c.result for c in compared] == rows
    for c in compared:
        assert c.baseline is _chosen_by_scan(rows, c.result, "fp32", [])
        streamed = c.result["variant"] in ("stream", "heads-50s", "heads-25s")
        methods = {"heads-50s": heads, "heads-25s": quarter}.get(c.result["variant"], [])
        assert c.reference is (_chosen_by_scan(rows, c.result, "fp32", methods) if streamed
                               else None)
    # the rule's cases are there: another device's baseline, and a reference on another device
    assert any(c.baseline["device"] != c.result["device"] for c in compared)
    assert any(c.reference and c.reference["device"] != c.result["device"] for c in compared)
    # another device of the pool before another pool's; one of another pool, marked
    assert any(c.baseline["device"] not in (c.result["device"], "big-1") for c in compared
               if c.result["target"] == "boxes")
    far = [c for c in compared if c.baseline and c.baseline["target"] != c.result["target"]]
    assert far and all(c.baseline_elsewhere for c in far)
    assert not any(c.baseline_elsewhere for c in compared if c not in far)
