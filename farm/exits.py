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
