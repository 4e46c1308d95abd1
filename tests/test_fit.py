"""farm.fit.Tall: a table of thousands of rows (farm compare's, farm table's) drawn by Rich a
column at a time, or as text without colours, must be the very bytes Rich draws a cell at a
time: at every width (narrowed and wrapped, too narrow for some columns), on a terminal with
colours and in a pipe. And farm sql's answer too wide for the terminal: a block per row."""
from __future__ import annotations

import io

import pytest
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from farm.fit import Tall, _layout


def _table(rows: int = 40, **options) -> Table:
    """Cells of every kind farm writes: markup, styled Text (an oom), empty cells, trailing
    spaces, wide characters, escaped brackets, an emoji code, arrows, text long enough to wrap,
    and cells repeated down a column."""
    table = Table(title="sweep t: each variant against fp32", header_style="bold",
                  pad_edge=False, caption="median ms: of the calls; ~: no significant "
                  "difference (p ≥ 0.05, or the interval holds 1)", **options)
    table.add_column("model", no_wrap=True)
    table.add_column("variant")
    table.add_column(Text("sst2\nms/sample"), justify="right", no_wrap=True)
    table.add_column("× baseline", justify="right")
    table.add_column("from", justify="right")
    table.add_column("verdict", justify="right")
    for i in range(rows):
        table.add_row(
            f"bert-{'tiny' if i % 3 else 'medium-2'}", f"int8 \\[{i}] 量化" if i % 7 == 0
            else ("" if i % 5 == 0 else f"heads-{i}  "),
            Text("oom", style="red") if i % 4 == 0 else Text(f"{i * 1.2345:.2f}"),
            f"[green]{0.5 + i / 100:.3f}[/]" if i % 2 else f"[dim]{1 + i / 1000:.3f}[/]",
            f"between {i % 5 + 2} and 3 repeats" if i % 3 else f"{i * 17} → {i * 13} calls ",
            "[bold green]faster[/]" if i % 2 else ":warning: ~" if i % 5 == 0 else "[dim]~[/]")
    return table


def _drawn(renderable, width: int, colours: bool) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=colours,
                      color_system="truecolor" if colours else None)
    console.print(renderable)
    return buf.getvalue()


@pytest.mark.parametrize("colours", [True, False])
@pytest.mark.parametrize("width", [200, 100, 82, 70, 50, 30])
def test_a_tall_table_is_drawn_as_rich_draws_it(width, colours):
    console = Console(file=io.StringIO(), width=width)
    # down to 50 columns (most narrowed and wrapped) Tall draws it; at 30, Rich does
    assert (_layout(_table(), console, console.options) is not None) == (width >= 50)
    assert _drawn(Tall(_table()), width, colours) == _drawn(_table(), width, colours)


def test_wide_tables_are_stacked_and_tables_of_other_shapes_left_to_rich():
    console = Console(file=io.StringIO(), width=100)
    assert _layout(_table(), console, console.options) is not None  # narrowed, wrapped
    for shaped in (_table(show_lines=True), _table(row_styles=["dim", ""]),
                   _table(box=None), _table(expand=True)):
        assert _layout(shaped, console, console.options) is None
        assert _drawn(Tall(shaped), 100, True) == _drawn(shaped, 100, True)
    centred = _table()
    centred.columns[1].justify = "center"
    assert _layout(centred, console, console.options) is None
    narrow = Console(file=io.StringIO(), width=30)  # columns narrowed to nothing: Rich's own
    assert _layout(_table(), narrow, narrow.options) is None


def test_every_box_rich_has_draws_the_same():
    for shape in (box.SQUARE, box.ROUNDED, box.SIMPLE, box.MINIMAL, box.ASCII, box.DOUBLE_EDGE,
                  box.HEAVY, box.MARKDOWN):
        for colours in (True, False):
            assert _drawn(Tall(_table(12, box=shape)), 120, colours) == \
                _drawn(_table(12, box=shape), 120, colours), shape


def test_a_title_holding_the_frames_mark_is_drawn_by_rich():
    table = _table(12)
    table.title = "sweep \ue000"  # the private-use character Tall marks its frame's row with
    assert _drawn(Tall(table), 120, False) == _drawn(table, 120, False)


def test_a_query_too_wide_for_the_terminal_is_shown_row_by_row_with_no_value_cut():
    """farm sql at 80 columns: a result that fits is a table; one that does not is a block of
    "column  value" lines per row (psql's expanded display), every value whole, where Rich
    would cut each column to a few characters (`0.10…`)."""
    from farm.fit import query_table

    def drawn(table, width=80) -> str:
        console = Console(width=width, record=True, color_system=None, file=io.StringIO())
        console.print(table)
        return console.export_text()

    columns = ["sweep", "job_key", "device", "model", "variant", "p50_ms", "per_sample_ms",
               "memory_mb", "note"]
    rows = [("scale-grid", "5a06ef1243508579", "nano-1", "bert-tiny", "fp32",
             0.10285119446241407, 0.10319957026498451, 206.16, "[bold]x\x1b[31m"),
            ("scale-grid", "69f5b97a935206d9", "xeon-2", "bert-base", "int8", 12.5, None,
             1024.0, "a " * 60)]
    text = drawn(query_table(columns, rows, 80))
    assert "…" not in text and max(map(len, text.splitlines())) <= 80
    assert "─[ row 1 ]─" in text and "─[ row 2 ]─" in text
    lines = text.splitlines()
    for name, value in (("p50_ms", "0.10285119446241407"), ("memory_mb", "1024.0"),
                        ("per_sample_ms", "0.10319957026498451"), ("job_key", "69f5b97a935206d9"),
                        ("note", "[bold]x\\x1b[31m")):
        assert any(line.split() == [name, value] for line in lines), name
    assert text.count(" a a ") > 0 and "\x1b" not in text  # a long value wraps, whole
    # what fits stays a table
    narrow = drawn(query_table(["device", "n"], [("nano-1", 51840), ("xeon-1", 3)], 80))
    assert "device" in narrow.splitlines()[1] and "51840" in narrow and "row 1" not in narrow
