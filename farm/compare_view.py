"""What `farm compare` prints: each result against its baseline as a Rich table
(differences_table), or as flat records for --csv, --json and `farm report` (difference_records).
Apart from farm.results_view, whose tables end a sweep's run: these are verdicts on demand."""
from __future__ import annotations

from rich.table import Table

from farm.console import _num, shown
from farm.results import label


VERDICT_STYLE = {"faster": "green", "slower": "red", "~": "dim", "n/a": "dim"}


def differences_table(title: str, differences: list, by: str) -> Table:
    """`farm compare`: each result against its baseline, green where it is significantly
    faster, red where slower, dim where the two cannot be told apart (~)."""
    change = differences[0].min_change if differences else 0.02
    caption = ("median ms: of the calls, or of the repeats' medians; × baseline: the ratio of "
               "medians, with its 95% bootstrap interval; p: Mann-Whitney U; from: between N "
               "and M repeats (each repeat's median, each a fresh agent process), or the calls "
               "of one process each; ~: no significant difference (p ≥ 0.05, or the interval "
               f"holds 1) or a change within ±{100 * change:g}%; Δ score: paired bootstrap "
               "over the examples both scored")
    few = next((d.repeats for d in differences if not d.decidable), None)
    if few:
        caption += (f"; {few[0]} and {few[1]} repeats are too few for p < 0.05 at all (use "
                    "repeats: 5 or more)")
    if any(not d.between_repeats for d in differences):
        caption += ("; judged on calls, the spread between agent processes is unseen (give "
                    "the sweep repeats: 5 to see it)")
    table = Table(title=title, header_style="bold", pad_edge=False, caption=caption)
    rows = [d.other for d in differences]
    varying = [c for c in ("task", "seq_len") if len({r[c] for r in rows}) > 1]
    for name in ("model", *varying, "batch_size"):
        table.add_column(label(name), no_wrap=True)
    table.add_column("baseline", no_wrap=True)
    table.add_column(by if by != "sweep" else "against", no_wrap=True)
    for name in ("median ms", "× baseline", "95% interval", "p", "from", "verdict", "Δ MiB",
                 "Δ score"):
        table.add_column(name, justify="right")
    for d in differences:
        style = VERDICT_STYLE[d.verdict]
        interval = f"[{d.low:.3f}, {d.high:.3f}]" if d.low is not None else ""
        score = ""
        if d.score_diff is not None:
            score = f"{d.score_diff:+.3f}"
            if d.score_low is not None:
                score += f" [{d.score_low:+.3f}, {d.score_high:+.3f}]"
        table.add_row(
            shown(d.other["model"]), *[shown(d.other[c]) for c in varying],
            str(d.other["batch_size"]), shown(_side(d.baseline, by)), shown(_side(d.other, by)),
            f"{_num(d.medians[0], '.2f')} → {_num(d.medians[1], '.2f')}",
            f"[{style}]{_num(d.ratio, '.3f')}[/]", interval, _num(d.p_value, ".2g"),
            _evidence(d), f"[{style}]{d.verdict}[/]", _whole_mib(d.memory_diff_mb), score)
    return table


def _whole_mib(change: float | None) -> str:
    """+12, -3, +0 (never "-0" for a fraction of a MiB)."""
    return _num(None if change is None else round(change), "+d")


def _evidence(d) -> str:
    """What a comparison was judged on: 'between 5 and 5 repeats', or '312 / 298 calls'."""
    if d.between_repeats:
        return f"between {d.repeats[0]} and {d.repeats[1]} repeats"
    return f"{d.calls[0]} / {d.calls[1]} calls"


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
             "min_change": d.min_change}
            for d in differences]
