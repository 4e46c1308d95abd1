"""Reading a checkpoint's outputs as a task's labels, and the tasks' metrics."""
from __future__ import annotations

import random

import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from farm.glue.labels import CHECKPOINT, GLUE_ORDER, LabelMismatch, outputs_for
from farm.glue.metrics import compute
from farm.glue.scoring import score
from farm.glue.tasks import TASKS


def _config(*names):
    return {"id2label": {str(i): n for i, n in enumerate(names)}}


def test_a_checkpoint_that_names_its_labels_is_trusted_in_its_own_order():
    datasets_order = outputs_for(TASKS["mnli-m"], _config("ENTAILMENT", "Neutral", "contradiction"))
    assert datasets_order.labels == ("entailment", "neutral", "contradiction")
    assert datasets_order.source == CHECKPOINT
    assert outputs_for(TASKS["sst2"], _config("positive", "negative")).labels == ("1", "0")
    assert outputs_for(TASKS["qnli"], _config("not entailment", "entailment")).labels == (
        "not_entailment", "entailment")


def test_default_label_names_mean_the_glue_order_and_say_so():
    outputs = outputs_for(TASKS["mnli-mm"], _config("LABEL_0", "LABEL_1", "LABEL_2"))
    assert outputs.labels == ("contradiction", "entailment", "neutral")
    assert outputs.source == GLUE_ORDER
    assert outputs_for(TASKS["cola"], {}).labels == ("0", "1")  # no id2label: two outputs


@pytest.mark.parametrize("task, config, words", [
    ("mnli-m", _config("LABEL_0", "LABEL_1"), "3 labels"),
    ("stsb", _config("LABEL_0", "LABEL_1"), "regression"),
    ("sst2", _config("LABEL_0"), "2 labels"),
    ("rte", _config("yes", "no"), "do not name"),
    ("mnli-m", _config("entailment", "entailment", "neutral"), "one to one"),
])
def test_outputs_that_cannot_be_the_tasks_labels_are_refused(task, config, words):
    with pytest.raises(LabelMismatch, match=words):
        outputs_for(TASKS[task], config)


def test_metrics_equal_scikit_learn_and_scipy():
    rng = random.Random(7)
    gold = [rng.choice("01") for _ in range(200)]
    guess = [g if rng.random() < 0.8 else rng.choice("01") for g in gold]
    assert compute(TASKS["mrpc"], gold, guess) == pytest.approx({
        "f1": f1_score(gold, guess, pos_label="1"), "accuracy": accuracy_score(gold, guess)})
    assert compute(TASKS["cola"], gold, guess) == pytest.approx(
        {"mcc": matthews_corrcoef(gold, guess)})
    values = [rng.uniform(0, 5) for _ in range(200)]
    noisy = [v + rng.gauss(0, 1) for v in values]
    assert compute(TASKS["stsb"], values, noisy) == pytest.approx(
        {"pearson": pearsonr(values, noisy)[0], "spearman": spearmanr(values, noisy)[0]})


def test_an_undefined_correlation_is_none_not_a_number():
    assert compute(TASKS["stsb"], [1.0, 2.0, 3.0], [2.0, 2.0, 2.0]) == {
        "pearson": None, "spearman": None}


class _Examples:
    def __init__(self, labels):
        self.labels = tuple(labels)


def test_scoring_maps_output_indexes_through_the_checkpoints_labels():
    spec = {"task": "sst2", "evaluate": True, "outputs": ["1", "0"], "label_order": CHECKPOINT,
            "model": {"name": "mine"}}
    outcome = {"status": "done", "result": {"predictions": [0, 1, 1, 0]}}
    result = score(spec, _Examples(["1", "0", "1", "1"]), outcome)
    assert result["predictions"] == [(0, "1", "1"), (1, "0", "0"), (2, "1", "0"), (3, "1", "1")]
    assert result["metric"] == "accuracy" and result["score"] == 0.75
    assert result["score_note"] is None


def test_random_weights_get_no_score_and_a_reason():
    spec = {"task": "qnli", "evaluate": False, "model": {"name": "bert-base"},
            "no_score": "no score: bert-base is a catalog architecture with random weights"}
    result = score(spec, _Examples(["entailment"]), {"status": "done", "result": {}})
    assert result.get("score") is None and "random weights" in result["score_note"]


def test_an_unnamed_mnli_checkpoints_order_is_a_stated_assumption():
    spec = {"task": "mnli-m", "evaluate": True, "outputs": ["contradiction", "entailment", "neutral"],
            "label_order": GLUE_ORDER, "model": {"name": "mine"}}
    result = score(spec, _Examples(["neutral", "entailment"]),
                   {"status": "done", "result": {"predictions": [2, 1]}})
    assert result["score"] == 1.0 and "GLUE processors' order" in result["score_note"]
    spec = dict(spec, task="cola", outputs=["0", "1"])  # both sources agree: nothing to say
    result = score(spec, _Examples(["0", "1"]), {"status": "done", "result": {"predictions": [0, 1]}})
    assert result["score_note"] is None
