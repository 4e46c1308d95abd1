"""The researchers' table: one row per model and variant, a group of three columns per task.

    research_table(rows) -> ResearchTable      what the table says (no formatting)
    to_markdown / to_csv / to_latex / to_rich  how it is written down

Each task's group holds the task's score (headed by its metric where known), the latency per
sample and the job's memory (farm.results.job_memory), all three taken from one job: the cell's job at the batch size asked
for, or by default at batch size 1, or where the cell has no batch-1 job at its smallest batch
size (that figure is then marked "(bN)"). A sweep with `repeats: N` measured each job N times:
the cell's figures are then the medians over the repeats that ended `done` (marked "(k of N)"
where only k did). A cell whose job did not end `done` shows how it ended (`oom`, `timeout`,
`failed`, ...) instead of numbers; a figure that was not measured is left empty ("–"), never
filled in.
"""
from __future__ import annotations

import csv
import io
import re
import statistics
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text

from farm.console import STATUS_STYLE, shown, visible
from farm.results import Status, job_memory, label

NOT_MEASURED = "–"
# The v_results columns the table reads (`farm table` reads only these: a sweep of 20,000 rows
# holds 120 columns, and reading them all took most of the command's time).
COLUMNS = ("sweep", "target", "device", "model", "variant", "task", "batch_size", "seq_len",
           "repeat", "status", "metric", "score", "score_note", "per_sample_ms", "memory_mb",
           "peak_mem_mb")
MS, MIB = label("per_sample_ms"), "MiB"


@dataclass(frozen=True)
class Cell:
    """One (row, task) of the table: the job chosen for it, or status None where none ran."""
    status: str | None = None
    batch_size: int | None = None
    score: float | None = None
    per_sample_ms: float | None = None
    memory_mb: float | None = None  # farm.results.job_memory
    repeats: int = 1  # the job's repeats that ended done: the figures are their medians
    of: int = 1  # the job's repeats
    scores_differ: bool = False  # the repeats did not all score the same (the median is shown)


@dataclass(frozen=True)
class ResearchTable:
    keys: tuple[str, ...]  # ("model", "variant"), "target" or "device", "seq_len" if they vary
    tasks: tuple[str, ...]                # in first-seen order
    metrics: dict[str, str | None]        # task -> its metric, None where no row names one
    rows: tuple[tuple[tuple, dict[str, Cell]], ...]
    batch_size: int                       # the batch size a cell's figures are taken at by default
    caption: str

    def labels(self, task: str) -> tuple[str, str, str]:
        return (self.metrics.get(task) or "score", MS, MIB)


def research_table(rows, by_device: bool | None = None, *,
                   batch_size: int | None = None) -> ResearchTable:
    """Lay v_results rows out for a paper: see the module docstring for what each cell holds.

    by_device: one row per device too. By default the rows of a pool's devices are merged (a
    pooled sweep spreads one variant's jobs over them, and a row per device would split it):
    where the sweep ran the same work on several pools (its targets), a row per pool; and only
    where two devices ran the same work otherwise is there a row per device. With False, two
    results for one cell raise ValueError.
    batch_size: take figures at this batch size (default: 1, else the cell's smallest).
    Rows of several sequence lengths get a `seq_len` key column rather than being mixed.
    """
    rows = list(rows)
    work = ("model", "variant")
    if by_device is not None:
        tries = [work + ("device",) if by_device else work]
    else:  # the first layout with one result per cell; the last one's error, if none has
        pools = len(_distinct(r.get("target") for r in rows)) > 1
        tries = [work, *[work + ("target",)] * pools, work + ("device",)]
    for keys in tries[:-1]:
        try:
            return _laid_out(rows, keys, batch_size)
        except ValueError:
            pass
    return _laid_out(rows, tries[-1], batch_size)


def _laid_out(rows: list[dict], keys: tuple[str, ...], batch_size: int | None) -> ResearchTable:
    """The table with a row per value of these keys (and of seq_len, where it varies); a
    ValueError where two results fall in one cell."""
    keys += ("seq_len",) if len(_distinct(r["seq_len"] for r in rows)) > 1 else ()
    tasks = tuple(_distinct(r["task"] for r in rows))
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in keys), {}).setdefault(r["task"], []).append(r)
    table_rows = tuple((key, {task: _cell(cands, batch_size) for task, cands in cells.items()})
                       for key, cells in groups.items())
    metrics = {t: _metric(r.get("metric") for r in rows if r["task"] == t) for t in tasks}
    differ = [" ".join(map(str, (*key, task))) for key, cells in table_rows
              for task, cell in cells.items() if cell.scores_differ]
    return ResearchTable(keys, tasks, metrics, table_rows, batch_size or 1,
                         _caption(rows, batch_size, differ))


def _distinct(values) -> list:
    return list(dict.fromkeys(v for v in values if v is not None))


def _metric(names) -> str | None:
    known = _distinct(names)
    return known[0] if len(known) == 1 else ("score" if known else None)


# A job's repeats differ in `repeat` (and their keys) alone.
_SAME_JOB = ("sweep", "target", "model", "variant", "task", "batch_size", "seq_len")


def _cell(candidates: list[dict], batch_size: int | None) -> Cell:
    sizes = {r["batch_size"] for r in candidates}
    wanted = batch_size if batch_size is not None else (1 if 1 in sizes else min(sizes))
    chosen = [r for r in candidates if r["batch_size"] == wanted]
    if not chosen:
        return Cell()
    jobs = {tuple(r.get(k) for k in _SAME_JOB) for r in chosen}
    if len(jobs) > 1 or len({r.get("repeat") for r in chosen}) < len(chosen):
        r = chosen[0]
        where = ", ".join(f"{c.get('device')} ({c.get('sweep')})" for c in chosen)
        raise ValueError(f"{len(chosen)} results for {r['model']} {r['variant']} {r['task']} "
                         f"batch {wanted} seq {r['seq_len']}, from {where}: pass by_device=True "
                         f"or the rows of one sweep")
    done = [r for r in chosen if r["status"] == Status.DONE]
    if not done:
        first = min(chosen, key=lambda r: r.get("repeat") or 1)
        return Cell(status=first["status"], batch_size=wanted)
    scores = {r.get("score") for r in done}
    return Cell(Status.DONE, wanted, _median(r.get("score") for r in done),
                _median(r.get("per_sample_ms") for r in done),
                _median(job_memory(r) for r in done), len(done), len(chosen), len(scores) > 1)


def _median(figures) -> float | None:
    """The median of a job's repeats' figure (None where no repeat measured it)."""
    values = [v for v in figures if v is not None]
    return statistics.median(values) if values else None


SCORE_CLAUSE = "; first column: the task's score (its metric named where known)"


def _caption(rows: list[dict], batch_size: int | None, scores_differ: list[str]) -> str:
    at = (f"batch size {batch_size}" if batch_size is not None else
          "batch size 1 (where a cell has no batch-1 job: its smallest batch size, marked (bN))")
    seq = _distinct(r["seq_len"] for r in rows)
    seq_text = f", sequence length {seq[0]}" if len(seq) == 1 else ""
    unscored = " (a score also where the model cannot have one: random weights, or a checkpoint " \
        "not fine-tuned for the task; v_results.score_note says which)" if any(
            (r.get("score_note") or "").startswith("no score") for r in rows) else ""
    caption = (f"{MS}: mean latency per sample at {at}{seq_text}; {MIB}: that job's memory "
               f"(its resident peak; the container's peak for results before farm measured "
               f"that){SCORE_CLAUSE}. "
               f"{NOT_MEASURED}: not measured{unscored}; oom, timeout, failed: how the job ended.")
    repeats = max((r.get("repeat") or 1 for r in rows), default=1)
    if repeats > 1:
        caption += (f" Each figure: the median of {repeats} repeats of its job (each in a fresh "
                    f"agent process); (k of {repeats}): of the k that ended done.")
        if scores_differ:
            caption += (" Scores differ between the repeats of " + ", ".join(scores_differ)
                        + " (the median shown).")
        elif any(r.get("score") is not None for r in rows):
            caption += " Every repeat of a job scored the same."
    return caption


def _texts(table: ResearchTable, cell: Cell) -> tuple[str, str, str]:
    """A cell's three figures as people read them."""
    if cell.status is None:
        return (NOT_MEASURED,) * 3
    if cell.status != Status.DONE:
        return (cell.status,) * 3
    mark = f" (b{cell.batch_size})" if cell.batch_size != table.batch_size else ""
    mark += f" ({cell.repeats} of {cell.of})" if cell.repeats < cell.of else ""
    ms = _num(cell.per_sample_ms, ".2f")
    return (_num(cell.score, ".3f"), ms + mark if ms != NOT_MEASURED else ms,
            _num(cell.memory_mb, ".0f"))


def _num(value, fmt: str) -> str:
    return NOT_MEASURED if value is None else format(value, fmt)


def _key_text(value) -> str:
    return NOT_MEASURED if value is None else str(value)


def to_markdown(table: ResearchTable) -> str:
    """A GitHub pipe table. Markdown has one header line only, so each figure's header names its
    task ("sst2 accuracy | sst2 ms/sample | sst2 MiB"); the caption follows the table."""
    def line(cells) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    header = [*table.keys, *(f"{t} {label}" for t in table.tasks for label in table.labels(t))]
    rule = "|" + "|".join([":---"] * len(table.keys) + ["---:"] * 3 * len(table.tasks)) + "|"
    body = [line([*map(_key_text, key),
                  *(text for t in table.tasks for text in _texts(table, cells.get(t, Cell())))])
            for key, cells in table.rows]
    return "\n".join([line(header), rule, *body, "", table.caption]) + "\n"


def to_csv(table: ResearchTable) -> str:
    """Figures unrounded, one header row of "task/column" names; each task also gets a
    "task/batch_size" column saying which job its figures come from. Not measured: empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = ("ms_per_sample", "peak_mib", "batch_size")
    writer.writerow([*table.keys, *(f"{t}/{n}" for t in table.tasks
                                    for n in (table.labels(t)[0], *names))])
    for key, cells in table.rows:
        writer.writerow([*("" if k is None else k for k in key),
                         *(v for t in table.tasks for v in _csv_cell(cells.get(t, Cell())))])
    return out.getvalue()


def _csv_cell(cell: Cell) -> tuple:
    if cell.status is None:
        return ("",) * 4
    if cell.status != Status.DONE:
        return (cell.status,) * 3 + (cell.batch_size,)
    return tuple("" if v is None else v
                 for v in (cell.score, cell.per_sample_ms, cell.memory_mb, cell.batch_size))


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", NOT_MEASURED: "--"}


def latex_escape(text: str) -> str:
    return re.sub("|".join(map(re.escape, _LATEX_SPECIAL)), lambda m: _LATEX_SPECIAL[m[0]], text)


def to_latex(table: ResearchTable) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}); the caption comes as a % comment, for
    the surrounding table environment. A job that did not end `done` spans its task's group."""
    first = len(table.keys) + 1
    groups = [rf"\multicolumn{{3}}{{c}}{{{latex_escape(t)}}}" for t in table.tasks]
    rules = [rf"\cmidrule(lr){{{first + 3 * i}-{first + 3 * i + 2}}}"
             for i in range(len(table.tasks))]
    header = [*table.keys, *(label for t in table.tasks for label in table.labels(t))]
    lines = [f"% {table.caption}",
             rf"\begin{{tabular}}{{{'l' * len(table.keys)}{'rrr' * len(table.tasks)}}}",
             r"\toprule",
             " & ".join([""] * len(table.keys) + groups) + r" \\",
             " ".join(rules),
             " & ".join(map(latex_escape, header)) + r" \\",
             r"\midrule"]
    for key, cells in table.rows:
        figures = [_latex_cell(table, cells.get(t, Cell())) for t in table.tasks]
        lines.append(" & ".join([*(latex_escape(_key_text(k)) for k in key), *figures]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _latex_cell(table: ResearchTable, cell: Cell) -> str:
    if cell.status not in (None, Status.DONE):
        return rf"\multicolumn{{3}}{{c}}{{{latex_escape(cell.status)}}}"
    return " & ".join(map(latex_escape, _texts(table, cell)))


def to_rich(table: ResearchTable, title: str | None = None) -> Table:
    """Task groups in the header as "task" over its column's name (e.g. "sst2\\naccuracy"); a
    table of one task names it in the title, over one-line headers. A task whose jobs no score
    came from (synthetic text has no labels) shows no score column: a column of – alone says
    nothing, and takes the room that keeps the others whole at 80 columns."""
    one = len(table.tasks) == 1 and title is not None
    shown_title = title and shown(f"{title} · {table.tasks[0]}" if one else title)
    caption = table.caption
    unscored = [t for t in table.tasks
                if all(cells.get(t, Cell()).score is None for _, cells in table.rows)]
    if len(unscored) == len(table.tasks):  # no score column left to explain
        caption = caption.replace(SCORE_CLAUSE, "", 1)
    if unscored:
        caption += (f" No job of {', '.join(unscored)} was scored: "
                    f"{'its' if len(unscored) == 1 else 'their'} score column is left out.")
    out = Table(title=shown_title, caption=Text(visible(caption)), header_style="bold",
                pad_edge=False)
    for key in table.keys:
        out.add_column(label(key), no_wrap=True)
    kept = {t: [i for i in range(3) if i or t not in unscored] for t in table.tasks}
    for task in table.tasks:
        names = table.labels(task)
        for i in kept[task]:
            out.add_column(Text(names[i] if one else f"{visible(task)}\n{names[i]}"),
                           justify="right", no_wrap=True)
    for key, cells in table.rows:
        figures = []
        for task in table.tasks:
            cell = cells.get(task, Cell())
            style = STATUS_STYLE.get(cell.status, "") if cell.status != Status.DONE else ""
            texts = _texts(table, cell)
            figures += [Text(texts[i], style=style) for i in kept[task]]
        out.add_row(*(Text(visible(_key_text(k))) for k in key), *figures)
    return out
