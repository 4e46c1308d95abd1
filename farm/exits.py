"""Fitting exit heads to a fine-tuned checkpoint that has none (`farm exits fit`): DeeBERT's
second stage. The backbone is frozen; one head per layer but the last (a pooler, dense + tanh on
the first token, and a classifier: DeeBERT's highway) is trained with cross-entropy on the task's
train.tsv; the last layer keeps the checkpoint's own pooler and classifier. Each head's accuracy
on the task's dev examples is reported beside the checkpoint's own.

Frozen means the layers' outputs never change: they are computed once per example (the first
token of every layer), and the heads train on those, so this takes minutes on a CPU for small
models. What is saved is farm's own layout (agents/exits.py): the checkpoint's files, copied as
they are, plus exit_heads.bin and exit_heads.json.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from farm.errors import FarmError
from farm.glue.data import read_examples
from farm.glue.labels import LabelMismatch, outputs_for
from farm.glue.tasks import TASKS

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class FitReport:
    out_dir: Path
    train_examples: int
    dev_examples: int
    accuracy: tuple[float, ...]  # dev accuracy of the exit after each layer, 1..L (L: own head)
    seconds: float


def fit(checkpoint: str | Path, task: str, data_dir: str | Path, out_dir: str | Path | None = None,
        *, epochs: int = 3, batch_size: int = 32, learning_rate: float = 1e-3,
        max_length: int = 128, max_train: int | None = None, seed: int = 0,
        progress: Progress | None = None) -> FitReport:
    """Fit exit heads to `checkpoint` on `task`'s train.tsv under data_dir and save the
    checkpoint with them in out_dir (default: a sibling folder named CHECKPOINT-exits)."""
    import time

    import torch

    started = time.perf_counter()
    progress = progress or (lambda phase, done, total: None)
    checkpoint = Path(checkpoint)
    definition = _task(task)
    train = read_examples(dataclasses.replace(definition, dev_file="train.tsv"), data_dir,
                          max_train)
    dev = read_examples(definition, data_dir)
    model, tokenizer, index = _open(checkpoint, definition)
    with torch.no_grad():
        train_x, _ = _features(model, tokenizer, train.texts, max_length, batch_size,
                               lambda d, t: progress("reading the train set", d, t))
        dev_x, dev_logits = _features(model, tokenizer, dev.texts, max_length, batch_size,
                                      lambda d, t: progress("reading the dev set", d, t))
    train_y = torch.tensor([index[label] for label in train.labels])
    dev_y = torch.tensor([index[label] for label in dev.labels])
    heads = _train(model, train_x, train_y, epochs, batch_size, learning_rate, seed, progress)
    accuracy = _accuracy(heads, dev_x, dev_logits, dev_y)
    out = Path(out_dir) if out_dir else checkpoint.with_name(checkpoint.name + "-exits")
    _save(checkpoint, out, heads, {"task": definition.name, "train_examples": len(train),
                                   "dev_accuracy": accuracy, "epochs": epochs})
    return FitReport(out, len(train), len(dev), tuple(accuracy), time.perf_counter() - started)


def _task(task: str):
    if task not in TASKS:
        raise FarmError(f"unknown GLUE task {task!r}", f"use one of: {', '.join(TASKS)}")
    if TASKS[task].regression:
        raise FarmError(f"{task} is a regression task: an exit's confidence needs classes",
                        "fit exits on a classification task")
    return TASKS[task]


def _open(checkpoint: Path, task):
    """The checkpoint's model (eval, frozen), its tokenizer, and label -> output index."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    config = checkpoint / "config.json"
    if not config.is_file():
        raise FarmError(f"no config.json in {checkpoint}", "point at a saved checkpoint folder")
    try:
        outputs = outputs_for(task, json.loads(config.read_text()))
    except LabelMismatch as error:
        raise FarmError(f"{checkpoint}: {error}", "use a checkpoint fine-tuned on this task")
    model = AutoModelForSequenceClassification.from_pretrained(str(checkpoint)).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    return model, tokenizer, {label: i for i, label in enumerate(outputs.labels)}


def _features(model, tokenizer, texts, max_length, batch_size, progress):
    """The first token of every layer's output, per example ([examples, layers, hidden]), and
    the model's own logits."""
    import torch

    rows, logits = [], []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        columns = [list(column) for column in zip(*chunk)]
        encoded = tokenizer(*columns, truncation=True, max_length=max_length, padding=True,
                            return_tensors="pt")
        out = model(**encoded, output_hidden_states=True)
        rows.append(torch.stack([h[:, 0] for h in out.hidden_states[1:]], dim=1))
        logits.append(out.logits)
        progress(min(start + batch_size, len(texts)), len(texts))
    return torch.cat(rows), torch.cat(logits)


def _train(model, features, targets, epochs, batch_size, learning_rate, seed, progress):
    import torch

    from agents import exits

    layers, hidden = features.shape[1], features.shape[2]
    heads = exits.new_heads(hidden, int(model.config.num_labels), layers - 1, seed=seed)
    optimizer = torch.optim.Adam(heads.parameters(), lr=learning_rate)
    order = torch.Generator().manual_seed(seed)
    steps = epochs * -(-len(targets) // batch_size)
    heads.train()
    for step in range(steps):
        batch = torch.randint(len(targets), (batch_size,), generator=order)
        loss = sum(torch.nn.functional.cross_entropy(
            _head_logits(head, features[batch, i]), targets[batch])
            for i, head in enumerate(heads))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        progress("training the exits", step + 1, steps)
    return heads.eval()


def _head_logits(head, first_token):
    return head.classifier(head.pooler(first_token.unsqueeze(1)))


def _accuracy(heads, features, own_logits, targets) -> list[float]:
    """Dev accuracy after each layer: the fitted heads, then the checkpoint's own head."""
    import torch

    with torch.no_grad():
        logits = [_head_logits(head, features[:, i]) for i, head in enumerate(heads)]
    return [float((x.argmax(-1) == targets).float().mean()) for x in logits + [own_logits]]


def _save(checkpoint: Path, out: Path, heads, meta: dict) -> None:
    from agents import exits

    if out.resolve() != checkpoint.resolve():
        if out.exists() and any(out.iterdir()):
            raise FarmError(f"{out} exists and is not empty",
                            "choose another --out, or remove it first")
        shutil.copytree(checkpoint, out, dirs_exist_ok=True)
    exits.save_farm_heads(str(out), heads, meta)


def table(report: FitReport):
    """A Rich table of each exit's dev accuracy."""
    from rich.table import Table

    made = Table(title=f"exits fitted: {report.train_examples} train examples, "
                       f"{report.dev_examples} dev examples, {report.seconds:.0f} s")
    made.add_column("exit after layer", justify="right")
    made.add_column("dev accuracy", justify="right")
    layers = len(report.accuracy)
    for layer, accuracy in enumerate(report.accuracy, start=1):
        name = f"{layer}" + (" (the checkpoint's own head)" if layer == layers else "")
        made.add_row(name, f"{accuracy:.3f}")
    return made


# -- reading the results -------------------------------------------------------------------------
# The v_results columns exits_table reads, beyond those of the researchers' table
# (farm.tables.COLUMNS), with which `farm table` reads them.
TABLE_COLUMNS = ("variant_spec", "exit_layer_mean", "exit_layers", "exit_expected_saving",
                 "exit_speedup", "exit_example_ms", "exit_example_p90_ms", "exit_full_ms",
                 "exit_flops_mean", "exit_histogram")


def is_exit(row: dict) -> bool:
    """A done job of an early-exit variant (it has a mean exit layer)."""
    return row.get("status") == "done" and row.get("exit_layer_mean") is not None


def setting(row: dict) -> tuple[str, float | None]:
    """(policy, its value) of an early-exit row: ("entropy", 0.2), ("patience", 2.0) ..."""
    from farm.comparisons import variant_of

    for _, params in variant_of(row).methods:
        policy = params.get("policy")
        if policy is not None:
            value = params.get(policy, params.get("threshold"))
            return policy, None if value is None else float(value)
    return "", None


def curve_key(row: dict) -> tuple:
    """What one curve of an early-exit model holds fixed: everything but the policy's value."""
    from farm.comparisons import variant_of

    variant = variant_of(row)
    methods = [(m, {k: v for k, v in p.items() if k not in ("threshold", "patience", "exit_at")})
               for m, p in variant.methods]
    return (row["model"], row["task"], row["batch_size"], row["seq_len"], row.get("target"),
            variant.precision, variant.execution, repr(methods))


def exits_table(title: str, rows: list[dict]):
    """One row per early-exit job, by model and policy value: score, mean exit layer, the
    expected saving beside the measured speed-up, per-example latency, FLOPs, the histogram."""
    from rich.table import Table

    from farm.console import shown

    done = sorted((r for r in rows if is_exit(r)), key=lambda r: (curve_key(r), setting(r)))
    varying = [c for c in ("task", "seq_len", "batch_size", "device")
               if len({r[c] for r in done}) > 1]
    table = Table(title=title, header_style="bold", pad_edge=False, caption=(
        "exit layer: mean over the examples (of L); saving: 1 − exit layer / L (DeeBERT's "
        "expected); × full: the same backbone at full depth on the same examples, timed "
        "interleaved in the same job, over the early exit's time; ms/example: each example "
        "alone at its own length (its batch's call); MFLOP/example: layers run and exit heads "
        "evaluated; exits: examples leaving at layers 1..L"))
    for name in ("model", *varying, "variant", "policy"):
        table.add_column(name, no_wrap=True)
    for name in ("score", "exit layer", "saving", "× full", "ms/example", "p90 ms", "full ms",
                 "MFLOP/example", "exits"):
        table.add_column(name, justify="right")
    for r in done:
        policy, value = setting(r)
        table.add_row(
            shown(r["model"]), *[shown(r[c]) for c in varying], shown(r["variant"]),
            shown(f"{policy} {value:g}" if value is not None else policy),
            _fmt(r.get("score"), ".3f"),
            f"{r['exit_layer_mean']:.2f} / {r.get('exit_layers')}",
            _fmt(r.get("exit_expected_saving") and 100 * r["exit_expected_saving"], ".0f", "%"),
            _fmt(r.get("exit_speedup"), ".2f", "×"), _fmt(r.get("exit_example_ms"), ".2f"),
            _fmt(r.get("exit_example_p90_ms"), ".2f"), _fmt(r.get("exit_full_ms"), ".2f"),
            _fmt(r.get("exit_flops_mean") and r["exit_flops_mean"] / 1e6, ".2f"),
            shown(" ".join(str(n) for n in json.loads(r.get("exit_histogram") or "[]"))))
    return table


def _fmt(value, fmt: str, unit: str = "") -> str:
    return "–" if value is None else format(value, fmt) + unit


# The x of a point: an early-exit job's per-example figure, a static job's per-sample one.
CURVE_X = {"ms": ("exit_example_ms", "per_sample_ms"), "flops": ("exit_flops_mean", "flops")}


def exit_curves(rows: list[dict], pool: str, x: str) -> dict[str, list[dict]]:
    """Per early-exit model in the pool (curve_key), its jobs across the policy's values as
    points {x, y (score), value, row}, by x. A pool, not a device: its devices are alike, and
    its jobs land on any of them (fp32 on one, its early exit on another)."""
    exit_x, _ = CURVE_X[x]
    curves: dict[tuple, list[dict]] = {}
    for r in rows:
        if is_exit(r) and r.get("target") == pool and r.get("score") is not None \
                and r.get(exit_x) is not None:
            curves.setdefault(curve_key(r), []).append(
                {"x": r[exit_x], "y": r["score"], "value": setting(r)[1], "row": r})
    named = {}
    for key, points in curves.items():
        policy = setting(points[0]["row"])[0]
        base = points[0]["row"]["variant"].rsplit("-", 1)[0]
        named[f"{key[0]} {base} ({policy})"] = sorted(points, key=lambda p: p["x"])
    return dict(sorted(named.items()))


def static_points(rows: list[dict], pool: str, x: str) -> list[dict]:
    """The pool's done jobs without early exit, with a score: {x, y, row}."""
    _, static_x = CURVE_X[x]
    return [{"x": r[static_x], "y": r["score"], "row": r} for r in rows
            if r.get("target") == pool and r.get("status") == "done" and not is_exit(r)
            and r.get("score") is not None and r.get(static_x) is not None]
