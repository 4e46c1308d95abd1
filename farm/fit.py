"""Tables that fit a terminal's width. `farm status` (fitted): each column says how much it
matters and whether its text may be cut; at a given width the columns that matter least are
left out until the rest fit. Rich, given too little room, shortens every column alike (a figure
becomes `1…`, or wraps a digit a line); here figures and names are always shown whole, and only
text that says so is cut (with …) or wrapped at its spaces. `farm sql` (query_table): a table
where every value fits whole, else a block per row. `farm compare`'s thousands of rows (Tall):
drawn as Rich draws them, at a fraction of the cost."""
from __future__ import annotations

import textwrap
from copy import copy
from dataclasses import dataclass, replace
from typing import Union

from rich import box
from rich.cells import cell_len
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

GAP = 2  # spaces between columns
KEEP = 100  # a column this important is never left out


class Clip:
    """Text whose head may be cut (with …) to fit, never its tail: a job's model name may be
    cut, never its batch size and sequence length."""

    def __init__(self, head: Text | str, tail: Text | str = ""):
        self.head, self.tail = _text(head), _text(tail)

    @property
    def width(self) -> int:
        return self.head.cell_len + self.tail.cell_len

    def at(self, width: int) -> Text:
        head = self.head.copy()
        if self.width > width:
            head.truncate(max(width - self.tail.cell_len, 1), overflow="ellipsis")
        return head + self.tail


class Bar:
    """A progress bar that draws itself at the width it is given."""

    def __init__(self, done: int, total: int, width: int = 24):
        self.done, self.total, self.width = done, total, width

    def at(self, width: int) -> Text:
        filled = int(round(width * self.done / self.total)) if self.total else 0
        return Text("━" * filled, "green") + Text("━" * (width - filled), "dim")


Cell = Union[str, Text, Clip, Bar]  # a str is Rich markup


@dataclass
class Column:
    header: str
    cells: list[Cell]  # one per row
    keep: int = 0  # how much it matters: the least is left out first; KEEP: never
    shrink: int | None = None  # text that may be cut (…) down to this width; None: never cut
    cut: int = 0  # how much its whole text matters: the least is cut first (with `keep`s)
    lines: int = 1  # cut text wraps at its spaces onto this many lines before it loses any
    justify: str = "left"

    @property
    def natural(self) -> int:
        return max([len(self.header), *(_width(c) for c in self.cells)])

    @property
    def least(self) -> int:
        if self.shrink is None:
            return self.natural
        return min(self.natural, max(self.shrink, len(self.header)))


def fitted(title: str | Text, columns: list[Column], width: int) -> Table:
    """A table of these columns in at most `width` cells. A column with nothing to show is
    left out; then, the least important first, columns are cut to their narrowest (`cut`) or
    left out (`keep`) until the rest fit; the room left widens the cut columns again, the most
    important first."""
    widths = {id(c): c.natural for c in columns if any(_width(cell) for cell in c.cells)}
    steps = sorted([(c.cut, False, i) for i, c in enumerate(columns) if c.shrink is not None]
                   + [(c.keep, True, i) for i, c in enumerate(columns) if c.keep < KEEP])
    for _, leave, i in steps:
        if _total(widths) <= width:
            break
        c = columns[i]
        if id(c) in widths and leave:
            del widths[id(c)]
        elif id(c) in widths:
            widths[id(c)] = c.least
    kept = [c for c in columns if id(c) in widths]
    spare = width - _total(widths)
    for c in sorted(kept, key=lambda c: -c.keep):
        more = max(min(spare, c.natural - widths[id(c)]), 0)
        widths[id(c)] += more
        spare -= more
    return _table(title, kept, [widths[id(c)] for c in kept])


def _table(title: str | Text, columns: list[Column], widths: list[int]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  padding=(0, GAP - 1, 0, 0), header_style="bold")
    for c, width in zip(columns, widths):
        table.add_column(c.header, width=width, justify=c.justify, no_wrap=True,
                         overflow="ellipsis")
    for row in zip(*(c.cells for c in columns)):
        table.add_row(*(_at(cell, width, c.lines) for cell, width, c in zip(row, widths, columns)))
    return table


def _total(widths: dict) -> int:
    return sum(widths.values()) + GAP * max(len(widths) - 1, 0)


def _text(cell) -> Text:
    return cell if isinstance(cell, Text) else Text.from_markup(cell or "")


def _width(cell) -> int:
    if isinstance(cell, (Clip, Bar)):
        return cell.width
    return max((line.cell_len for line in _text(cell).split()), default=0)


def _at(cell, width: int, lines: int):
    """A cell's text at a width: a Clip or Bar drawn to it; text longer than it wrapped at
    its spaces onto up to `lines` lines, the last cut (…) if there is more."""
    if isinstance(cell, (Clip, Bar)):
        return cell.at(width)
    text = _text(cell)
    if lines == 1 or _width(text) <= width:
        return text
    wrapped = [part for line in text.plain.split("\n")
               for part in textwrap.wrap(line, width, break_long_words=False) or [""]]
    if len(wrapped) > lines:
        wrapped = [*wrapped[:lines - 1], " ".join(wrapped[lines - 1:])]
    return Text("\n".join(wrapped), text.style)  # Rich cuts a line still too long with …


class Tall:
    """A Rich table of thousands of rows (`farm compare`'s), drawn as Rich draws it at a
    fraction of the cost. Rich lays out and renders every cell on its own (a fraction of a
    millisecond each, and 36,000 cells took seconds). Here each cell is wrapped as Rich wraps
    it at the widths Rich gives the columns (measured on one cell per column holding all its
    lines), a column's equal cells once, and its row's cells filled out to the row's height
    with blank lines; then, for a terminal, the same table is one row whose cells hold each
    column's lines, which Rich draws a column at a time, and without colours (a pipe, a file)
    the lines are put together as text in the frame Rich draws around one row. Where that
    could draw otherwise (row styles or sections, a column of a set width or centred, a cell of
    a look of its own), or the table does not fit even narrowed, Rich draws the table itself.
    tests/test_fit.py holds them to the same bytes."""

    def __init__(self, table: Table):
        self.table = table

    def __rich_console__(self, console, options):
        layout = _layout(self.table, console, options)
        if layout is None:
            yield self.table
        elif console.color_system is None:  # text alone: no style is ever written
            yield from _plain(self.table, *layout, console, options)
        else:
            yield _stacked(self.table, *layout)


def _layout(table: Table, console, options):
    """(each column's width with its padding, each column's cells as lists of lines, each row's
    height), or None where the table should be drawn by Rich."""
    if table.row_count < 2 or not _rows_alike(table.box) or not table.show_edge or \
            table.expand or \
            table.width is not None or table.min_width is not None or table.show_lines or \
            table.row_styles or table.show_footer or table.collapse_padding or \
            table.padding[0] or table.padding[2] or \
            any(r.style is not None or r.end_section for r in table.rows):
        return None
    cells = [_texts(column, console) for column in table.columns]
    if any(texts is None for texts in cells):
        return None
    probe = copy(table)  # measured as the table would be: each column's lines in one cell
    probe.columns = [column.copy() for column in table.columns]
    probe.rows = []
    # Rich measures text by its widest line and word alone: the probe holds each different
    # line once, and no styles
    probe.add_row(*(Text("\n".join(dict.fromkeys(text.plain for text in texts)))
                    for texts in cells))
    room = options.max_width - table._extra_width
    widths = probe._calculate_column_widths(console, options.update_width(room))
    if sum(widths) > room or any(width <= table._get_padding_width(i)
                                 for i, width in enumerate(widths)):
        return None  # not drawn whole, or a column narrowed to nothing
    lines = [_each_once(texts, _wrapped, column, width - table._get_padding_width(i), console)
             for i, (column, texts, width) in enumerate(zip(table.columns, cells, widths))]
    heights = [max(len(column[row]) for column in lines) for row in range(table.row_count)]
    return widths, lines, heights


def _each_once(cells: list, made, *args) -> list:
    """made(cell, *args) of each cell, made once for a cell repeated (the same object: _texts
    gives a column's equal strings one Text) and shared by its rows: a column of thousands of
    rows holds a few hundred different cells."""
    found = {}
    for cell in cells:
        if id(cell) not in found:
            found[id(cell)] = made(cell, *args)
    return [found[id(cell)] for cell in cells]


def _stacked(table: Table, widths: list[int], lines: list, heights: list[int]) -> Table:
    """The table as one row of each column's lines."""
    stacked = copy(table)
    stacked.columns = [replace(column.copy(), width=width - table._get_padding_width(i))
                       for i, (column, width) in enumerate(zip(table.columns, widths))]
    stacked.rows = []
    stacked.add_row(*(Text("\n").join(line for row, height in zip(column, heights)
                                      for line in [*row, *[Text()] * (height - len(row))])
                      for column in lines))
    return stacked


_MARK = "\ue000"  # a private-use character: what no title, border or cell holds


def _rows_alike(shape) -> bool:
    """Whether a table's last row is drawn as the others (Rich draws it with the box's footer
    edges): it is so for every box Rich has."""
    return shape is not None and (shape.mid_left, shape.mid_vertical, shape.mid_right) == \
        (shape.foot_left, shape.foot_vertical, shape.foot_right)


def _plain(table: Table, widths: list[int], lines: list, heights: list[int], console,
           options):
    """The table as text, without Rich's work per cell: Rich draws the title, the header, the
    borders and the caption around one row of marks, and each row's lines go where the marks
    are, between that row's borders."""
    frame = _stacked(table, widths, [[[Text(_MARK)]]] * len(widths), [1])
    drawn = ["".join(segment.text for segment in line)
             for line in Segment.split_lines(console.render(frame, options))]
    marked = [i for i, line in enumerate(drawn) if _MARK in line]
    if len(marked) != 1 or drawn[marked[0]].count(_MARK) != len(widths):
        yield table  # a title or caption holding the mark: Rich draws it all
        return
    at = marked[0]
    places, edge, end = _places(table, widths, drawn[at])
    cells = [_each_once(column, _placed, place) for column, place in zip(lines, places)]
    blanks = [before + " " * content + after for before, content, _, after in places]
    for line in drawn[:at]:
        yield Segment(line)
        yield Segment.line()
    for row, height in enumerate(heights):
        drawn_row = [column[row] for column in cells]
        for n in range(height):
            yield Segment(edge + "".join(cell[n] if n < len(cell) else blank
                                         for cell, blank in zip(drawn_row, blanks)) + end)
            yield Segment.line()
    for line in drawn[at + 1:]:
        yield Segment(line)
        yield Segment.line()


def _places(table: Table, widths: list[int], template: str) -> tuple[list[tuple], str, str]:
    """Where a row's text goes in the line Rich drew with marks: each column's (border and
    padding before, width of text, justify, padding and border after); the line's left edge
    and its end."""
    places, x = [], 1  # after the left edge
    for i, (column, width) in enumerate(zip(table.columns, widths)):
        content = width - table._get_padding_width(i)
        left = 0 if i == 0 and not table.pad_edge else table.padding[3]
        end = x + left + content
        places.append((template[x:x + left], content, column.justify,
                       template[end:end + width - content - left + 1]))
        x = end + width - content - left + 1
    return places, template[:1], template[x:]


def _placed(cell: list[Text], place: tuple) -> list[str]:
    """A cell's lines as text between its column's borders, justified in its width."""
    before, content, justify, after = place
    placed = []
    for line in cell:
        text = line.plain.rstrip() if justify == "right" else line.plain  # as Rich justifies
        gap = " " * max(content - cell_len(text), 0)
        placed.append(before + (gap + text if justify == "right" else text + gap) + after)
    return placed


def _texts(column, console) -> list[Text] | None:
    """A column's cells as the Text Rich would render; None where one has a look of its own
    (justification or wrapping) that one cell of them all would lose, or the column
    is set to a width, centred or justified (Rich's justification of a line already justified
    is then not the line)."""
    if column.width is not None or column.min_width is not None or column.max_width is not None \
            or column.ratio or column.style or column.justify not in ("left", "right", "default") \
            or column.vertical != "top":
        return None
    made: dict[str, Text] = {}  # a column's equal strings: one Text (_each_once)
    texts = []
    for cell in column.cells:
        if not isinstance(cell, str):
            text = cell
        elif cell in made:
            texts.append(made[cell])  # looked at when made
            continue
        else:
            text = made[cell] = _rendered(cell, column.highlight, console)
        if not isinstance(text, Text) or text.justify or text.overflow or \
                text.no_wrap is not None or "\t" in text.plain or \
                (text.plain and not text.plain.strip()):
            return None
        texts.append(text)
    return texts


def _rendered(cell: str, highlight: bool, console) -> Text:
    """A str cell as Rich renders it (console.render_str): with no markup tag ('[') nor emoji
    code (':') to find, text is itself, which Rich takes most of its time to find out."""
    if highlight or "[" in cell or ":" in cell:
        return console.render_str(cell, highlight=highlight)
    return Text(cell)


def _wrapped(text: Text, column, width: int, console) -> list[Text]:
    """A cell's lines as Rich wraps it in its column (a line that fits is left to the stacked
    cell, which justifies it as Rich would have; but a styled one is justified here, as its
    style covers the spaces that justify it)."""
    if text.cell_len <= width and "\n" not in text.plain and not text.style:
        return [text]
    return list(text.wrap(console, width, justify=column.justify, overflow=column.overflow,
                          no_wrap=column.no_wrap))


def _drawn_width(widths: list[int]) -> int:
    """The width of a Rich table (its default box, pad_edge=False) whose columns' text is this
    wide: a rule between columns and at each edge, a space of padding either side inside."""
    return sum(widths) + 3 * len(widths) - 1


def within(columns: list[tuple], width: int, widths: list[int]) -> tuple[list[tuple], list[str]]:
    """Columns (header, cells, keep, ...) of a Rich table (its default box, pad_edge=False)
    within `width` cells at these `widths`: the least important (`keep`) left out first until
    the rest fit, one kept at KEEP never (what may wrap is narrowed after); and the headers
    left out, in the columns' order."""
    out: set[int] = set()
    for i in sorted(range(len(columns)), key=lambda i: columns[i][2]):
        if _drawn_width([w for j, w in enumerate(widths) if j not in out]) <= width or \
                columns[i][2] >= KEEP:
            break
        out.add(i)
    return ([c for i, c in enumerate(columns) if i not in out],
            [c[0] for i, c in enumerate(columns) if i in out])


def narrowed(widths: list[int], least: list[int | None], width: int) -> list[int]:
    """The widths of a Rich table's columns (its default box, pad_edge=False) within `width`
    cells: the widest of those that may be narrowed (least: how far; None: not at all) taken a
    cell at a time, none below its least (Rich's own narrowing takes every column alike, and
    crops the table's edge where its minimum widths are in the way)."""
    widths = list(widths)
    while _drawn_width(widths) > width:
        room = [i for i, w in enumerate(widths) if least[i] is not None and w > least[i]]
        if not room:
            break
        widths[max(room, key=lambda i: widths[i])] -= 1
    return widths


def natural_width(header: str, cells: list[str]) -> int:
    """The widest line of a column's header and cells (Rich markup), each distinct cell once
    (read as markup only where it has a bracket: a sweep's thousands of figures have none)."""
    return max(max(map(cell_len, Text.from_markup(text).plain.split("\n"))) if "[" in text
               else max(map(cell_len, text.split("\n"))) for text in {header, *cells})


def query_table(columns: list[str], rows: list, width: int):
    """`farm sql`'s answer: a table where each value fits whole in `width` cells; else each row
    a block of "column  value" lines (psql's expanded display), its values wrapped, none cut.
    Rich, given a table too wide, cuts every column alike, and a number cut to `0.10…` reads
    as another number. Values are shown as they are (farm.console.visible: control characters
    written out, brackets never styles)."""
    from farm.console import visible

    names = [Text(visible(c, lines=False)) for c in columns]
    cells = [[Text(visible(v, lines=False)) for v in row] for row in rows]
    natural = [max([name.cell_len, *(row[i].cell_len for row in cells)])
               for i, name in enumerate(names)]
    if not cells or _drawn_width(natural) <= width:
        table = Table(header_style="bold", pad_edge=False)
        for name in names:
            table.add_column(name)
        for row in cells:
            table.add_row(*row)
        return table
    blocks = Table.grid(padding=(0, 2))
    blocks.add_column(style="bold", no_wrap=True)
    blocks.add_column(overflow="fold")
    for i, row in enumerate(cells, 1):
        blocks.add_row(Text(f"─[ row {i} ]─", style="dim"), "")
        for name, value in zip(names, row):
            blocks.add_row(name, value)
    return blocks
