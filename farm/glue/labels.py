"""What each of a checkpoint's outputs means for a task.

Checkpoints disagree on label order (the GLUE processors list MNLI as contradiction, entailment,
neutral; the datasets library as entailment, neutral, contradiction), so a checkpoint that names
its labels (config.json id2label) is trusted, whatever its order. One that does not (transformers'
default LABEL_0, LABEL_1...) is read in the GLUE processors' order, and the result says so.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from farm.glue.tasks import Task, label_named

_DEFAULT_NAME = re.compile(r"^label_?\d+$")  # transformers' LABEL_0, LABEL_1...

GLUE_ORDER = "glue-order"  # the checkpoint names no labels: the GLUE processors' order is assumed
CHECKPOINT = "checkpoint"  # the checkpoint's own id2label
# Tasks whose label order differs between the GLUE processors and the datasets library: there an
# unnamed checkpoint's order is a guess, and its score says so. (Elsewhere both agree.)
ORDER_DIFFERS = ("mnli-m", "mnli-mm")


class LabelMismatch(ValueError):
    """A checkpoint whose outputs cannot be read as the task's labels."""


@dataclass(frozen=True)
class Outputs:
    labels: tuple[str, ...] | None  # the task label of each output; None for regression
    source: str  # CHECKPOINT or GLUE_ORDER (regression: CHECKPOINT)


def _config_names(config: dict) -> list[str]:
    id2label = config.get("id2label") or {}
    count = len(id2label) or int(config.get("num_labels") or 2)
    return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(count)]


def outputs_for(task: Task, config: dict) -> Outputs:
    """How to read a checkpoint's outputs (config = its parsed config.json) as task labels."""
    names = _config_names(config)
    if task.regression:
        if len(names) != 1:
            raise LabelMismatch(f"{task.name} is a regression task (one output), and the "
                                f"checkpoint has {len(names)} outputs")
        return Outputs(None, CHECKPOINT)
    if len(names) != task.num_labels:
        raise LabelMismatch(f"{task.name} has {task.num_labels} labels "
                            f"({', '.join(task.labels)}), and the checkpoint has {len(names)} "
                            "outputs")
    if all(_DEFAULT_NAME.match(n.strip().lower()) for n in names):
        return Outputs(task.labels, GLUE_ORDER)
    mapped = [label_named(task, n) for n in names]
    if None in mapped or len(set(mapped)) != len(mapped):
        raise LabelMismatch(f"the checkpoint's labels ({', '.join(names)}) do not name "
                            f"{task.name}'s labels ({', '.join(task.labels)}) one to one")
    return Outputs(tuple(mapped), CHECKPOINT)
