"""The GLUE task table: where each task's evaluation examples live, and how they are scored.

Labels are the class names in the original GLUE processors' order (as the files write them);
the datasets library's class names and order differ, and farm.glue.data maps them by name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str                        # farm's name for the task
    folder: str                      # its folder in the GLUE distribution
    dev_file: str                    # the evaluation file in that folder
    header: bool                     # whether the file starts with a header (all but CoLA)
    text_columns: tuple              # header names, or column indexes where there is no header
    label_column: str | int
    labels: tuple[str, ...] | None   # class names in the GLUE processors' order; None: regression
    metrics: tuple[str, ...]         # main first
    hf_config: str                   # the datasets library's GLUE config
    hf_split: str                    # and its split holding these examples

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    @property
    def pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


_BINARY = ("0", "1")
_NLI = ("entailment", "not_entailment")
_MNLI = ("contradiction", "entailment", "neutral")
_PAIR = ("sentence1", "sentence2")


def _mnli(name: str, dev_file: str, hf_split: str) -> Task:
    return Task(name, "MNLI", dev_file, True, _PAIR, "gold_label", _MNLI, ("accuracy",),
                "mnli", hf_split)


TASKS: dict[str, Task] = {task.name: task for task in (
    Task("cola", "CoLA", "dev.tsv", False, (3,), 1, _BINARY, ("mcc",), "cola", "validation"),
    Task("sst2", "SST-2", "dev.tsv", True, ("sentence",), "label", _BINARY, ("accuracy",),
         "sst2", "validation"),
    Task("mrpc", "MRPC", "dev.tsv", True, ("#1 String", "#2 String"), "Quality", _BINARY,
         ("f1", "accuracy"), "mrpc", "validation"),
    Task("stsb", "STS-B", "dev.tsv", True, _PAIR, "score", None, ("pearson", "spearman"),
         "stsb", "validation"),
    Task("qqp", "QQP", "dev.tsv", True, ("question1", "question2"), "is_duplicate", _BINARY,
         ("f1", "accuracy"), "qqp", "validation"),
    _mnli("mnli-m", "dev_matched.tsv", "validation_matched"),
    _mnli("mnli-mm", "dev_mismatched.tsv", "validation_mismatched"),
    Task("qnli", "QNLI", "dev.tsv", True, ("question", "sentence"), "label", _NLI,
         ("accuracy",), "qnli", "validation"),
    Task("rte", "RTE", "dev.tsv", True, _PAIR, "label", _NLI, ("accuracy",), "rte", "validation"),
    Task("wnli", "WNLI", "dev.tsv", True, _PAIR, "label", _BINARY, ("accuracy",),
         "wnli", "validation"),
)}


# The words the datasets library (and many checkpoints' id2label) use for the 0/1 tasks' classes
# "0" and "1", by datasets config. The other tasks' labels are words already.
CLASS_WORDS = {"cola": ("unacceptable", "acceptable"), "sst2": ("negative", "positive"),
               "mrpc": ("not_equivalent", "equivalent"), "qqp": ("not_duplicate", "duplicate"),
               "wnli": ("not_entailment", "entailment")}


def label_named(task: Task, name: str) -> str | None:
    """farm's label for a class name (its own label, or the class word for it, in any case and
    with spaces or hyphens for underscores), None when the name is not one of the task's."""
    normal = re.sub(r"[\s-]+", "_", str(name).strip().lower())
    words = CLASS_WORDS.get(task.hf_config, ())
    if normal in words:
        return str(words.index(normal))
    return {label.lower(): label for label in task.labels or ()}.get(normal)
