"""What `farm submit` and `farm resume` print when a sweep ends: a row per job (results_table),
and where the sweep has them, the variants with methods (methods_table) and the streamed ones
(streaming_table) against eager fp32. Apart from farm.console, which draws the sweep while it
runs and holds the helpers every view shares: together they were past STYLE.md's ~400 lines."""
from __future__ import annotations

from collections.abc import Callable

from rich.table import Table

from farm.console import STATUS_STYLE, _num, shown
from farm.fit import KEEP, narrowed, natural_width, within
from farm.results import Status, label


# A row's figures came from a window a reviewer should doubt (agents/measure.py, conditions.py).
FLAGS = (("noisy", "noisy", "IQR above 10% of the median"),
         ("host_busy", "busy host", "other processes took over 10% of its CPUs"),
         ("throttled", "throttled", "a clock fell during the window"))


def flags(row: dict) -> str:
    return ", ".join(word for column, word, _ in FLAGS if row.get(column))


_SAME_JOB = ("model", "variant", "task", "seq_len", "batch_size", "target")


def results_table(title: str, rows: list[dict], elsewhere: dict | None = None,
                  width: int | None = None) -> Table:
    """One row per job; tasks and sequence lengths get a column only when the sweep varies them.
    An oom row shows the memory its container reached when the job was killed; Δlogit is
    against the model's eager fp32 on the same work, from the rows or `elsewhere`
    (farm.comparisons.compare). A figure column with no figure in it is left out; within
    `width` cells, where given, so are the columns that matter least (the status where every
    job is done, parameters, FLOPs, the limit and headroom, p50, Δlogit), and the names wrap:
    a figure is never cut."""
    varying = [c for c in ("task", "seq_len", "repeat") if len({r.get(c) for r in rows}) > 1]
    if "repeat" in varying:  # a job's repeats one under the other, in their order
        position = {id(r): i for i, r in enumerate(rows)}
        first = {}
        for r in rows:
            first.setdefault(tuple(r.get(c) for c in _SAME_JOB), position[id(r)])
        rows = sorted(rows, key=lambda r: (first[tuple(r.get(c) for c in _SAME_JOB)],
                                           r.get("repeat") or 1))
    scored = any(r.get("metric") or r.get("score_note") for r in rows)  # GLUE tasks ran
    # The job's own memory where it was measured (0012 on); the container's peak before it.
    memory = "memory_mb" if any(r.get("memory_mb") is not None for r in rows) else "peak_mem_mb"
    limited = [c for c in ("memory_limit_mb", "headroom_mb")
               if any(_memory(r, c) is not None for r in rows)]
    gaps = _logit_gaps(rows, elsewhere)
    flagged = [r for r in rows if flags(r)]
    columns = [
        *_work(rows, ("model", "variant", *varying), "device"),
        *[("score", [f"{r['metric']} {r['score']:.3f}" if r.get("score") is not None else
                     "[dim]no score[/]" if r.get("score_note") else "–" for r in rows],
           KEEP, FIGURE)] * scored,
        (label("p50_ms"), [_num(r["p50_ms"], ".2f") for r in rows], 3, FIGURE),
        (label("per_sample_ms"), [_num(r["per_sample_ms"], ".2f") for r in rows], KEEP,
         FIGURE),
        *[(label(c), [_memory_cell(r, c) for r in rows], KEEP if c == memory else 2, FIGURE)
          for c in (memory, *limited)],
        (label("flops"), [_num(r["flops"] and r["flops"] / 1e9, ".3f") for r in rows], 1,
         FIGURE),
        (label("params"), [_num(r["params"] and r["params"] / 1e6, ".2f") for r in rows], 0,
         FIGURE),
        *[("Δlogit", [_gap_cell(gaps.get(id(r))) for r in rows], 4, FIGURE)] * bool(gaps),
        *[("doubt", [flags(r) for r in rows], KEEP, NAME)] * bool(flagged)]
    columns = [c for c in columns if c[3] != FIGURE or any(c[1])]  # a column of no figure
    return _drawn(title, lambda shown: _results_caption(
        rows, flagged, gaps if "Δlogit" in shown else {}), columns, width)


# What a column of these tables holds: a NAME may wrap (at its width's end), a SHARE ("95.31
# (87%)") or TEXT at its spaces; a KEY or FIGURE never; figures and shares are right-aligned.
NAME, KEY, FIGURE, SHARE, TEXT = "name", "key", "figure", "share", "text"


def _work(rows: list[dict], names: tuple[str, ...], *more: str) -> list[tuple]:
    """The columns that say which job a row is: these names (model, variant and what varies),
    batch, `more` (the device), status; where every job is done, the status is the first
    column left out at a narrow width (the line under the tables says so)."""
    done = all(r["status"] == Status.DONE for r in rows)
    return [*[(label(c), [shown(r[c]) for r in rows], KEEP, NAME) for c in names],
            (label("batch_size"), [str(r["batch_size"]) for r in rows], KEEP, KEY),
            *[(label(c), [shown(r[c]) for r in rows], KEEP, NAME) for c in more],
            (label("status"), [f"[{STATUS_STYLE.get(r['status'], '')}]{r['status']}[/]"
                               for r in rows], -1 if done else KEEP, KEY)]


def _drawn(title: str, caption: Callable[[set[str]], str], columns: list[tuple],
           width: int | None) -> Table:
    """The table of these columns, its caption made for the headers shown. Within `width`
    cells, where given: the columns that matter least (their `keep`) left out first, at their
    natural widths but shares and text at their narrowest (they are made to wrap), and the
    caption says which; then the names, shares and text narrowed (wrapped) as far as their
    headers and longest words allow. A figure is never cut or wrapped."""
    left, widths = [], [None] * len(columns)
    if width is not None:
        natural = {id(c): natural_width(c[0], c[1]) for c in columns}
        least = {id(c): _least(c[0], c[1], c[3]) for c in columns  # what may wrap or fold
                 if c[3] in (SHARE, TEXT, NAME)}
        columns, left = within(columns, width, [
            least[id(c)] if c[3] in (SHARE, TEXT) else natural[id(c)] for c in columns])
        widths = [natural[id(c)] for c in columns]
        for kinds in ((SHARE, TEXT), (SHARE, TEXT, NAME)):  # shares and text first: they wrap
            widths = narrowed(widths, [least[id(c)] if c[3] in kinds else None  # at spaces
                                       for c in columns], width)
    text = caption({header for header, *_ in columns})
    if left:
        text = (f"{text}; " if text else "") + (f"left out at {width} columns: "
                                                 f"{', '.join(left)}")
    table = Table(title=title, header_style="bold", pad_edge=False, caption=text or None)
    for (header, _, _, holds), at in zip(columns, widths):
        table.add_column(header, justify="right" if holds in (FIGURE, SHARE) else "left",
                         no_wrap=holds in (KEY, FIGURE), overflow="fold", width=at,
                         style="yellow" if header == "doubt" else None)
    for row in zip(*(cells for _, cells, _, _ in columns)):
        table.add_row(*row)
    return table


def _least(header: str, cells: list[str], holds: str) -> int | None:
    """How narrow a column may go: a name to its header's width; a share or text to its longest
    word (wrapped at its spaces, never within a word), and at least 7 (a share) or 16 (text,
    a figure a line where it can); a key or figure not."""
    if holds == NAME:
        return len(header)
    if holds in (SHARE, TEXT):
        words = {word for cell in {header, *cells} for word in cell.split()}
        return max([7 if holds == SHARE else 16, *(len(w) for w in words)])
    return None


def _results_caption(rows: list[dict], flagged: list[dict], gaps: dict) -> str:
    parts = [f"{word}: {why}" for column, word, why in FLAGS
             if any(r.get(column) for r in flagged)]
    if any(r["status"] == Status.OOM and r.get("peak_mem_mb") is not None for r in rows):
        parts.append("oom: [red]red[/] memory is the container's peak when the kernel killed "
                     "the job, headroom the limit less that peak")
    if gaps:
        parts.append("Δlogit: max |logit − the same model's eager fp32's| on the first batch, "
                     "same task, batch and sequence length" + _elsewhere_note(gaps.values()))
    return "; ".join(parts)


def _memory(row: dict, column: str):
    """A memory figure of a row. An oom job has none of its own: it had the container's peak at
    the kill (peak_mem_mb), and the limit less that as its headroom."""
    if row.get(column) is not None or row["status"] != Status.OOM:
        return row.get(column)
    peak, limit = row.get("peak_mem_mb"), row.get("memory_limit_mb")
    if column == "memory_mb":
        return peak
    if column == "headroom_mb" and None not in (peak, limit):
        return limit - peak
    return None


def _memory_cell(row: dict, column: str) -> str:
    """Memory, limit or headroom: red for an oom job's peak and for headroom of 0 or less."""
    value = _memory(row, column)
    text = _num(value, ".0f")
    killed = row["status"] == Status.OOM and column in ("memory_mb", "peak_mem_mb")
    short = column == "headroom_mb" and value is not None and value <= 0
    return f"[red]{text}[/]" if text and (killed or short) else text


def _logit_gaps(rows: list[dict], elsewhere: dict | None) -> dict:
    """id(row) -> its Compared, for the rows with a Δlogit against eager fp32."""
    from farm.comparisons import compare

    if not any(r.get("logits_json") for r in rows):  # no logits (before 0007): no Δlogit
        return {}
    return {id(c.result): c for c in compare(rows, elsewhere) if c.logit_gap is not None}


def _gap_cell(compared) -> str:
    """A Δlogit, with † where the fp32 it is against ran in another sweep."""
    return _far(_num(compared.logit_gap, ".1e"), compared.baseline_elsewhere) if compared else ""


def _elsewhere_note(compared, reference: bool = False) -> str:
    """'; †: compared with sweep s on d ...', naming the sweep and device of each baseline (and,
    with reference, each streamed variant's eager reference) that came from another sweep or
    another pool of this one: perhaps other hardware."""
    found = sorted({(other["sweep"], other["device"]) for c in compared
                    for other, far in ((c.baseline, c.baseline_elsewhere),
                                       (c.reference, reference and c.reference_elsewhere))
                    if far})
    if not found:
        return ""
    return ("; †: compared with " + ", ".join(f"sweep {shown(sweep)} on {shown(device)}"
                                             for sweep, device in found)
            + " (none of that work done in the row's own pool)")


def _varying(rows: list[dict]) -> tuple[str, ...]:
    """model, variant, and task, seq and device where they vary: which job a row is."""
    return ("model", "variant",
            *[c for c in ("task", "seq_len", "device") if len({r[c] for r in rows}) > 1])


def _compared_order(c) -> tuple:
    r = c.result
    return (r["model"], r["task"], r["seq_len"], r["batch_size"], r["device"] or "",
            not c.is_baseline, r["variant"])


def streaming_table(title: str, rows: list[dict], elsewhere: dict | None = None,
                    width: int | None = None) -> Table:
    """The stream variants against eager fp32: time, model memory, reads, and whether their
    logits are those of the eager model of their own precision and methods. Baselines and
    references come from the rows, else from `elsewhere` (farm.comparisons.compare). Within
    `width` cells, where given, the reads go first, then model MiB and Δlogit."""
    from farm.comparisons import compare

    compared = compare(rows, elsewhere)
    streamed = [c for c in compared if c.variant.streamed]
    listed = [c for c in compared if c.variant.streamed or any(
        c.result is o.reference or c.result is o.baseline for o in streamed)]
    caption = ("× eager: per-sample time / eager fp32's; model MiB: peak above the agent "
               "idle; per pass: layer MB read, read ms (any thread), wait ms (the pass "
               "stalled), compute ms; Δlogit: max |logit − the eager model's of the same "
               "precision and methods| on the first batch"
               + _elsewhere_note(streamed, reference=True))
    listed = sorted(listed, key=_compared_order)
    results = [c.result for c in listed]

    def figure(header: str, values: list[str], keep: int = KEEP) -> tuple:
        return (header, values, keep, FIGURE)

    columns = [
        *_work(results, _varying(results)),
        figure("ms/sample", [_num(r.get("per_sample_ms"), ".1f") for r in results]),
        figure("× eager", [_far(_num(c.latency_ratio, ".2f"), c.baseline_elsewhere)
                           for c in listed]),
        figure("model MiB", [_num(r.get("model_memory_mb"), ".0f") for r in results], 3),
        figure("% eager", [_far(_num(c.memory_ratio and 100 * c.memory_ratio, ".0f"),
                                c.baseline_elsewhere) for c in listed]),
        figure("MB/pass", [_num(r.get("bytes_read") and r["bytes_read"] / 1e6, ".0f")
                           for r in results], 2),
        figure("read ms", [_num(r.get("read_ms"), ".1f") for r in results], 1),
        figure("wait ms", [_num(r.get("read_wait_ms"), ".1f") for r in results], 1),
        figure("compute ms", [_num(r.get("compute_ms"), ".1f") for r in results], 0),
        figure("Δlogit", [_far(_num(c.stream_gap, ".1e"), c.reference_elsewhere)
                          for c in listed], 4)]
    return _drawn(title, lambda _: caption, columns, width)


def _far(text: str, elsewhere: bool) -> str:
    """A figure against a run of another sweep, marked †."""
    return text + "†" if text and elsewhere else text


def methods_table(title: str, rows: list[dict], elsewhere: dict | None = None,
                  width: int | None = None) -> Table:
    """The variants with methods against eager fp32 on the same work (from the rows, else from
    `elsewhere`: farm.comparisons.compare): whether their savings in parameters and FLOPs
    became time and memory, what they did to the logits (and the score), and each method's own
    figures."""
    from agents.methods import table_fields
    from farm.comparisons import compare

    compared = compare(rows, elsewhere)
    with_methods = [c for c in compared if c.variant.methods]
    listed = [c for c in compared
              if c.variant.methods or any(c.result is o.baseline for o in with_methods)]
    fields = [f for f in table_fields() if any(c.result.get(f[0]) is not None for c in listed)]
    scored = any(c.result.get("metric") or c.result.get("score_note") for c in listed)
    caption = "; ".join(
        ["× fp32 and (%): against the eager fp32 model on the same work; model MiB: peak above "
         "the agent idle; Δlogit: max |logit − fp32's| on the first batch"
         + _elsewhere_note(with_methods)]
        + [f"{n.replace('_', ' ')}: {what}" for n, _, _, what in fields])
    # masks store zeros: their nonzero parameters, where a variant's are clearly fewer than it
    # stores (a model's own zero biases are a fraction of a percent)
    masked = any(c.result["nonzero_params"] < 0.95 * (c.result.get("params") or 0)
                 for c in listed if c.result.get("nonzero_params") is not None)
    listed = sorted(listed, key=_compared_order)
    results = [c.result for c in listed]
    # A number is never wrapped or cut (either reads as another number): a figure with its
    # share may wrap at the space between them; what the methods did is one text column, a
    # figure a line, however many methods there are.
    did = ["\n".join(name.replace("_", " ") + " " + _num(r[name], FIELD_FORMATS[kind])
                      for name, kind, *_ in fields if r.get(name) is not None) for r in results]
    columns = [
        *_work(results, _varying(results)),
        *[("score", [_num(r.get("score"), ".3f") or ("[dim]no score[/]" if r.get("score_note")
                                                      else "–") for r in results],
           KEEP, FIGURE)] * scored,
        ("ms/sample", [_num(r.get("per_sample_ms"), ".1f") for r in results], KEEP, FIGURE),
        ("× fp32", [_far(_num(c.latency_ratio, ".2f"), c.baseline_elsewhere) for c in listed],
         KEEP, FIGURE),
        ("params M", [_with_share(r.get("params") and r["params"] / 1e6, c.params_ratio, ".2f")
                      for r, c in zip(results, listed)], 3, SHARE),
        *[("nonzero M", [_num(r.get("nonzero_params") and r["nonzero_params"] / 1e6, ".2f")
                         for r in results], 2, FIGURE)] * masked,
        ("GFLOP/sample", [_with_share(r.get("flops") and r["flops"] / 1e9, c.flops_ratio,
                                      ".2f") for r, c in zip(results, listed)], 1, SHARE),
        ("model MiB", [_with_share(r.get("model_memory_mb"), c.memory_ratio, ".0f")
                       for r, c in zip(results, listed)], 4, SHARE),
        ("Δlogit", [_far(_num(c.logit_gap, ".1e"), c.baseline_elsewhere) for c in listed], 5,
         FIGURE),
        *[("what the methods did", [shown(text) for text in did], 0, TEXT)] * bool(fields)]
    return _drawn(title, lambda _: caption, columns, width)


FIELD_FORMATS = {"float": ".4f", "int": "", "text": ""}  # a method's figure by its FIELDS type


def _with_share(value, ratio, fmt: str) -> str:
    """'95.31 (87%)': a figure and its share of the baseline's."""
    text = _num(value, fmt)
    return f"{text} ({100 * ratio:.0f}%)" if text and ratio is not None else text
