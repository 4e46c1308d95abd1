"""What `farm compare` prints: each result against its baseline as a Rich table
(differences_table), or as flat records for --csv, --json and `farm report` (difference_records).
Apart from farm.results_view, whose tables end a sweep's run: these are verdicts on demand."""
from __future__ import annotations

from rich.table import Table

from farm.console import _num, shown
from farm.fit import KEEP, natural_width, within
from farm.results import label


VERDICT_STYLE = {"faster": "green", "slower": "red", "~": "dim", "n/a": "dim"}
# By what is compared: what else the two sides of a comparison share (farm.comparisons.pairs
# and sweep_pairs): variants are compared within a target (the sweep's pool of devices),
# devices within a variant, sweeps within both.
_APART = {"variant": ("target",), "device": ("variant",), "sweep": ("target", "variant")}


def differences_table(title: str, differences: list, by: str,
                      width: int | None = None) -> Table:
    """`farm compare`: each result against its baseline, green where it is significantly
    faster, red where slower, dim where the two cannot be told apart (~). Within `width`
    cells, where given: the columns that matter least are left out until the rest fit (the
    baseline first, which the title names; the work, what is compared, the ratio and the
    verdict never), each column whole, never a figure cut."""
    change = differences[0].min_change if differences else 0.02
    scored = any(d.score_diff is not None for d in differences)
    rows = [d.other for d in differences]
    varying = [c for c in ("task", "seq_len") if len({r[c] for r in rows}) > 1]
    # What pairs the two sides besides the work, where the rows hold more than one of it or
    # a row's two sides differ in it (two sweeps' single pools): without it, two pools' (or two
    # variants') comparisons of one work read as one.
    apart = {c: [_both(d, c) for d in differences] for c in _APART[by]}
    apart = {c: cells for c, cells in apart.items()
             if len(set(cells)) > 1 or any(d.baseline[c] != d.other[c] for d in differences)}
    styles = [VERDICT_STYLE[d.verdict] for d in differences]
    # (header, cells, how much it matters: the least is left out first, KEEP never)
    columns = [
        *[(label(c), [shown(r[c]) for r in rows], KEEP) for c in ("model", *varying)],
        (label("batch_size"), [str(r["batch_size"]) for r in rows], KEEP),
        *[(label(c), cells, KEEP) for c, cells in apart.items()],
        ("baseline", [shown(_side(d.baseline, by)) for d in differences], 0),
        (by if by != "sweep" else "against", [shown(_side(r, by)) for r in rows], KEEP),
        ("median ms", [f"{_num(d.medians[0], '.2f')} → {_num(d.medians[1], '.2f')}"
                       for d in differences], 4),
        ("× baseline", [_num(d.ratio, ".3f") for d in differences], KEEP),
        ("95% interval", [f"[{d.low:.3f}, {d.high:.3f}]" if d.low is not None else ""
                          for d in differences], 6),
        ("p", [_num(d.p_value, ".2g") for d in differences], 5),
        ("from", [_evidence(d) for d in differences], 3),
        ("verdict", [d.verdict for d in differences], KEEP),
        ("Δ MiB", [_whole_mib(d.memory_diff_mb) for d in differences], 1),
        *([("Δ score", [_score(d) for d in differences], 2)] if scored else [])]
    left = []
    if width is not None:
        columns, left = within(columns, width, [natural_width(header, values)
                                                for header, values, _ in columns])
    names = [header for header, _, _ in columns]
    caption = "; ".join(
        part for name, part in (
            ("median ms", "median ms: of the calls, or of the repeats' medians"),
            ("× baseline", "× baseline: the ratio of medians"
             + (", with its 95% bootstrap interval" if "95% interval" in names else "")),
            ("p", "p: Mann-Whitney U"),
            ("from", "from: N / M repeats (each repeat's median, each a fresh agent process), "
                     "or the calls of one process each"),
            ("verdict", "~: no significant difference (p ≥ 0.05, or the interval holds 1) or "
                        f"a change within ±{100 * change:g}%"),
            ("Δ score", "Δ score: paired bootstrap over the examples both scored"))
        if name in names)
    few = next((d.repeats for d in differences if not d.decidable), None)
    if few:
        caption += (f"; {few[0]} and {few[1]} repeats are too few for p < 0.05 at all (use "
                    "repeats: 5 or more)")
    if any(not d.between_repeats for d in differences):
        caption += ("; judged on calls, the spread between agent processes is unseen (give "
                    "the sweep repeats: 5 to see it)")
    if left:
        caption += f"; left out at {width} columns: {', '.join(left)}"
    table = Table(title=title, header_style="bold", pad_edge=False, caption=caption)
    for header, _, _ in columns:  # the names to the left, the figures to the right
        table.add_column(header, no_wrap=True, justify="right" if header in _FIGURES else "left")
    cells = [(header in _COLOURED, values) for header, values, _ in columns]
    for i, style in enumerate(styles):
        table.add_row(*(f"[{style}]{values[i]}[/]" if coloured else values[i]
                        for coloured, values in cells))
    return table


_FIGURES = {"median ms", "× baseline", "95% interval", "p", "from", "verdict", "Δ MiB",
            "Δ score"}
_COLOURED = {"× baseline", "verdict"}  # by the verdict


def _score(d) -> str:
    if d.score_diff is None:
        return ""
    score = f"{d.score_diff:+.3f}"
    if d.score_low is not None:
        score += f" [{d.score_low:+.3f}, {d.score_high:+.3f}]"
    return score


def _whole_mib(change: float | None) -> str:
    """+12, -3, +0 (never "-0" for a fraction of a MiB)."""
    return _num(None if change is None else round(change), "+d")


def _evidence(d) -> str:
    """What a comparison was judged on: '5 / 5 repeats', or '312 / 298 calls'."""
    if d.between_repeats:
        return f"{d.repeats[0]} / {d.repeats[1]} repeats"
    return f"{d.calls[0]} / {d.calls[1]} calls"


def _both(d, column: str) -> str:
    """What the two sides of a comparison share in a column ("nano"), or each one's where they
    differ ("nano → orin")."""
    a, b = d.baseline[column], d.other[column]
    return shown(a) if a == b else f"{shown(a)} → {shown(b)}"


def _side(row: dict, by: str) -> str:
    return str(row["sweep"] if by == "sweep" else row[by])


def difference_records(differences: list, by: str) -> list[dict]:
    """`farm compare --csv/--json`: one flat record per comparison (its jobs: the first
    repeat's, where there are several)."""
    return [{"model": d.other["model"], "task": d.other["task"],
             "batch_size": d.other["batch_size"], "seq_len": d.other["seq_len"],
             "by": by, "baseline": _side(d.baseline, by), "other": _side(d.other, by),
             "baseline_job": d.baseline["job_key"], "other_job": d.other["job_key"],
             "baseline_calls": d.calls[0], "other_calls": d.calls[1],
             "baseline_p50_ms": d.baseline.get("p50_ms"), "other_p50_ms": d.other.get("p50_ms"),
             "ratio": d.ratio, "ratio_low": d.low, "ratio_high": d.high, "p_value": d.p_value,
             "verdict": d.verdict, "peak_mem_diff_mb": d.memory_diff_mb,
             "score_diff": d.score_diff, "score_low": d.score_low, "score_high": d.score_high,
             "baseline_repeats": d.repeats[0], "other_repeats": d.repeats[1],
             "between": "repeats" if d.between_repeats else "calls",
             "baseline_median_ms": d.medians[0], "other_median_ms": d.medians[1],
             "min_change": d.min_change,
             # the side compared's (the baseline's variant too, but with by variant; its
             # target too, but with by device or between sweeps of one pool each)
             "target": d.other["target"], "variant": d.other["variant"],
             "baseline_target": d.baseline["target"]}
            for d in differences]
