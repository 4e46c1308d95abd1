"""farm report's page: one self-contained index.html (inline CSS, no scripts, nothing fetched)
beside its charts. In the order a reader wants them: the researchers' table per pool
(farm.tables), the charts at full width with their SVGs, the environment the jobs ran in, each
variant against fp32, and every job last, folded away.
"""
from __future__ import annotations

import html
from pathlib import Path

from farm.charts import pool_name
from farm.results import label
from farm.tables import Cell, ResearchTable, _key_text, _texts, research_table

TABLE_HEADERS = tuple(map(label, (
    "model", "variant", "task", "batch_size", "seq_len", "device", "status", "p50_ms",
    "per_sample_ms", "memory_mb", "peak_mem_mb", "flops", "params", "score")))
# What the rows say about where they ran, per device: v_results has no env column (env_json
# stays in results), so these are the columns that describe the device and the run.
ENVIRONMENT = ("memory_limit_mb", "cpu_list", "clock_source", "temp_source", "energy_source",
               "container_peak_method", "flops_method", "tokenizer")
FLAGS = ("noisy", "throttled", "host_busy")  # 1 when a job's figures deserve doubt
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
figure { margin: 0 0 2em 0; } figure img { width: 100%; max-width: 1350px; height: auto; }
figcaption { font-size: 0.9em; color: #555; } summary h2 { display: inline; }
table { border-collapse: collapse; font-size: 0.9em; margin-bottom: 1em; }
caption { caption-side: bottom; text-align: left; font-size: 0.85em; color: #555; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.done td.status { color: #080; } tr.oom td.status, tr.failed td.status,
tr.timeout td.status { color: #b00; }
tr.faster td { color: #080; } tr.slower td { color: #b00; } tr.ns td.n { color: #999; }
"""


def esc(value) -> str:
    return "" if value is None else html.escape(str(value), quote=True)


def number(value, fmt: str, scale: float = 1.0) -> str:
    return "" if value is None else format(value / scale, fmt)


def research_section(rows: list[dict]) -> str:
    """farm table's table per pool: a row per model and variant, a column group per task."""
    parts = ["<h2>Results</h2>"]
    targets = sorted({r.get("target") or "" for r in rows})
    for target in targets:
        mine = [r for r in rows if (r.get("target") or "") == target]
        if len(targets) > 1:
            parts.append(f"<h3>{esc(pool_name(target))}</h3>")
        try:
            parts.append(research_html(research_table(mine)))
        except ValueError as error:  # two results for one cell, even a row per device
            parts.append(f"<p>No table: {esc(error)}</p>")
    return "\n".join(parts) + "\n"


def research_html(table: ResearchTable) -> str:
    keys = "".join(f'<th rowspan="2">{esc(k)}</th>' for k in table.keys)
    groups = "".join(f'<th colspan="3">{esc(t)}</th>' for t in table.tasks)
    labels = "".join(f"<th>{esc(text)}</th>" for t in table.tasks for text in table.labels(t))
    body = []
    for key, cells in table.rows:
        figures = [text for t in table.tasks for text in _texts(table, cells.get(t, Cell()))]
        body.append("<tr>" + "".join(f"<td>{esc(_key_text(k))}</td>" for k in key)
                    + "".join(f'<td class="n">{esc(f)}</td>' for f in figures) + "</tr>")
    return (f'<table class="research"><caption>{esc(table.caption)}</caption><thead>'
            f"<tr>{keys}{groups}</tr><tr>{labels}</tr></thead><tbody>\n"
            + "\n".join(body) + "\n</tbody></table>")


def charts_section(heading: str, charts: list[tuple[Path, str]]) -> str:
    figures = "".join(
        f'<figure><img src="{esc(png.name)}" alt="{esc(caption)}"><figcaption>{esc(caption)}'
        f' (<a href="{esc(png.with_suffix(".svg").name)}">SVG</a>)</figcaption></figure>'
        for png, caption in charts)
    return f"<section><h2>{esc(heading)}</h2>{figures}</section>"


def environment_section(rows: list[dict]) -> str:
    """Per device: its pool, its jobs, and what its rows say about it (ENVIRONMENT, FLAGS)."""
    ran = [r for r in rows if r.get("device")]
    names = sorted({r["device"] for r in ran})
    shown = [c for c in ENVIRONMENT if any(r.get(c) is not None for r in ran)]
    flags = [c for c in FLAGS if any(r.get(c) is not None for r in ran)]
    head = "".join(f"<th>{esc(h)}</th>" for h in ("device", "pool", "jobs done",
                                                    *map(label, shown + flags)))
    lines = []
    for device in names:
        mine = [r for r in ran if r["device"] == device]
        cells = [device, ", ".join(sorted({pool_name(r.get("target") or "") for r in mine})),
                 f"{sum(r.get('status') == 'done' for r in mine)} of {len(mine)}"]
        cells += [", ".join(sorted({_plain(r[c]) for r in mine if r.get(c) is not None}))
                  for c in shown]
        cells += [f"{sum(r.get(c) == 1 for r in mine)} of "
                  f"{sum(r.get(c) is not None for r in mine)}" for c in flags]
        lines.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    return (f"<h2>Environment</h2>\n<table><thead><tr>{head}</tr></thead><tbody>\n"
            + "\n".join(lines) + "\n</tbody></table>\n")


def _plain(value) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


COMPARED_HEADERS = ("model", "task", "batch", "seq", "variant", "time / fp32's",
                    "95% interval", "p", "verdict", "from")
NOT_SIGNIFICANT = ("~: no significant difference (Mann-Whitney p ≥ 0.05, the 95% bootstrap "
                   "interval of the ratio of medians holds 1, or the ratio is within the "
                   "smallest change worth reporting); its ratio is shown grey, not as a finding")


def compared_section(differences: list[dict]) -> str:
    """Each variant's time against fp32's on the same work, as `farm compare` judges it."""
    if not differences:
        return ""
    # The target (the sweep's pool) where there are several: a work's variants are compared
    # within each, and its rows would otherwise read as the same comparison twice.
    pooled = len({d["target"] for d in differences}) > 1
    headers = (*COMPARED_HEADERS[:4], "target", *COMPARED_HEADERS[4:]) if pooled \
        else COMPARED_HEADERS
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    lines = []
    for d in differences:
        faint = d["verdict"] not in ("faster", "slower")
        interval = (f"{d['ratio_low']:.3f}–{d['ratio_high']:.3f}"
                    if d["ratio_low"] is not None and d["ratio_high"] is not None else "")
        source = (f"{d['baseline_repeats']} / {d['other_repeats']} repeats"
                  if d["between"] == "repeats" else
                  f"{d['baseline_calls']} / {d['other_calls']} calls")
        cells = [esc(d["model"]), esc(d["task"]), esc(d["batch_size"]), esc(d["seq_len"]),
                 *([esc(d["target"])] if pooled else []), esc(d["other"])]
        figures = [number(d["ratio"], ".3f"), interval, number(d["p_value"], ".3g"),
                   esc(d["verdict"]), source]
        lines.append(f'<tr class="{"ns" if faint else esc(d["verdict"])}">'
                     + "".join(f"<td>{c}</td>" for c in cells)
                     + "".join(f'<td class="n">{f}</td>' for f in figures) + "</tr>")
    return (f"<h2>Against fp32</h2>\n<table><thead><tr>{head}</tr></thead><tbody>\n"
            + "\n".join(lines) + f"\n</tbody></table>\n<p>{esc(NOT_SIGNIFICANT)}.</p>\n")


def job_row(r: dict) -> str:
    text = [r.get("model"), r.get("variant"), r.get("task"), r.get("batch_size"),
            r.get("seq_len"), r.get("device")]
    figures = [number(r.get("p50_ms"), ".2f"), number(r.get("per_sample_ms"), ".2f"),
               number(r.get("memory_mb"), ".0f"), number(r.get("peak_mem_mb"), ".0f"),
               number(r.get("flops"), ".3f", 1e9),
               number(r.get("params"), ".2f", 1e6), number(r.get("score"), ".4g")]
    status = esc(r.get("status") or "")
    cells = [f"<td>{esc(v)}</td>" for v in text]
    # The error goes in a tooltip: it can be long, and the status says enough at a glance.
    cells.append(f'<td class="status" title="{esc(r.get("error"))}">{status}</td>')
    cells += [f'<td class="n">{v}</td>' for v in figures]
    return f'<tr class="{status}">{"".join(cells)}</tr>'


def jobs_section(rows: list[dict]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in TABLE_HEADERS)
    body = "\n".join(job_row(r) for r in rows)
    return (f"<details><summary><h2>All jobs</h2> ({len(rows)}, click to show)</summary>\n"
            f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n"
            "</tbody></table></details>\n")


def render_page(rows: list[dict], title: str, sections: list[tuple[str, list[tuple[Path, str]]]],
                differences: list[dict] = ()) -> str:
    """`sections`: (heading, [(a chart's PNG, its caption)]) as write_report wrote them."""
    charts = "\n".join(charts_section(heading, charts) for heading, charts in sections)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
            f"<h1>{esc(title)}</h1>\n{research_section(rows)}{charts}\n"
            f"{environment_section(rows)}{compared_section(differences)}{jobs_section(rows)}"
            "</body></html>\n")
