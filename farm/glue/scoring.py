"""Turning an agent's predictions into a job's score, in the controller.

The agent returns one raw prediction per example (an output index, or the regression value); the
controller, which read the gold labels, maps each index to its label through the checkpoint's
outputs (farm.glue.labels) and computes the task's metrics. Predictions are kept with the result,
so that anyone can recompute a metric or join errors to their inputs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from farm.glue.labels import GLUE_ORDER, ORDER_DIFFERS
from farm.glue.metrics import compute
from farm.glue.tasks import TASKS
from farm.results import Status

if TYPE_CHECKING:
    from farm.glue.data import Examples


def score(spec: dict, examples: Examples | None, outcome: dict) -> dict:
    """Fill a done job's metric, score, metrics and predictions from its raw predictions."""
    result = outcome.setdefault("result", {})
    raw = result.pop("predictions", None)
    task = TASKS.get(spec["task"])
    if task is None or examples is None or outcome.get("status") != Status.DONE:
        return result
    if not spec.get("evaluate"):
        result["score_note"] = spec.get("no_score") or "no score: not evaluated"
        return result
    if raw is None:
        return result
    outputs = spec.get("outputs")
    predicted = [float(p) for p in raw] if task.regression else [outputs[int(p)] for p in raw]
    labels = list(examples.labels)
    metrics = compute(task, labels, predicted)
    result.update(metric=task.main_metric, score=metrics[task.main_metric], metrics=metrics,
                  predictions=[(i, _text(gold), _text(guess))
                               for i, (gold, guess) in enumerate(zip(labels, predicted))])
    notes = []
    if result["score"] is None:
        notes.append(f"{task.main_metric} is undefined on these predictions (all the same value)")
    if spec.get("label_order") == GLUE_ORDER and task.name in ORDER_DIFFERS:
        notes.append("the checkpoint names no labels: outputs read in the GLUE processors' order "
                     f"({', '.join(task.labels)}), not the datasets library's")
    result["score_note"] = "; ".join(notes) or None
    return result


def _text(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)
