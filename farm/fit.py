"""Tables that fit a terminal's width (`farm status`): each column says how much it matters and
whether its text may be cut; at a given width the columns that matter least are left out until
the rest fit. Rich, given too little room, shortens every column alike (a figure becomes `1…`,
or wraps a digit a line); here figures and names are always shown whole, and only text that
says so is cut (with …) or wrapped at its spaces."""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Union

from rich import box
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
