"""A task's metrics from gold labels and predictions, computed by scikit-learn and scipy
(accuracy by counting).

CoLA: Matthews correlation; STS-B: Pearson and Spearman; MRPC and QQP: F1 (of class "1") and
accuracy; the rest: accuracy. The first of a task's metrics is its main one (results.score).
A metric that is undefined on the predictions (a correlation with constant predictions) is None,
never a number made up to fill the gap.
"""
from __future__ import annotations

import math
import warnings

from farm.glue.tasks import Task


def compute(task: Task, labels: list, predictions: list) -> dict[str, float | None]:
    if len(labels) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} examples")
    if not labels:
        return {name: None for name in task.metrics}
    if task.regression:
        gold, guess = [float(x) for x in labels], [float(x) for x in predictions]
    else:
        gold, guess = list(map(str, labels)), list(map(str, predictions))
    return {name: _finite(_METRICS[name](gold, guess)) for name in task.metrics}


def _accuracy(gold, guess):
    # The share of matches, as scikit-learn's accuracy_score gives it (the same float), without
    # its input checks: a comparison's bootstrap calls this 2,000 times per pair.
    return sum(map(str.__eq__, gold, guess)) / len(gold)


def _f1(gold, guess):
    from sklearn.metrics import f1_score
    return f1_score(gold, guess, pos_label="1", labels=["0", "1"], average="binary",
                    zero_division=0.0)


def _mcc(gold, guess):
    from sklearn.metrics import matthews_corrcoef
    return matthews_corrcoef(gold, guess)


def _correlation(name, gold, guess):
    import scipy.stats
    with warnings.catch_warnings():  # constant input: undefined, reported as None below
        warnings.simplefilter("ignore")
        return getattr(scipy.stats, name)(gold, guess)[0] if len(gold) > 1 else None


def _pearson(gold, guess):
    return _correlation("pearsonr", gold, guess)


def _spearman(gold, guess):
    return _correlation("spearmanr", gold, guess)


_METRICS = {"accuracy": _accuracy, "f1": _f1, "mcc": _mcc, "pearson": _pearson,
            "spearman": _spearman}


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
