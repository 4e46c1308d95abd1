"""The checkpoints that GLUE tests train for themselves: they learn their task, say what their
outputs mean, and load with transformers' Auto classes, old (4.18) and new."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import pearsonr

from glue_checkpoints import KINDS, MARKER, examples, predict, train_checkpoint

FRESH = 300  # examples from a seed the checkpoints never trained on


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return {kind: train_checkpoint(root / kind, kind) for kind in KINDS}


def _score(kind, guess, gold):
    if kind == "regression":
        return pearsonr(guess, gold)[0]
    return sum(g == y for g, y in zip(guess, gold)) / len(gold)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_learns_its_task_well_past_chance(trained, kind):
    fresh = examples(kind, FRESH, seed=7)
    guess = predict(trained[kind], [texts for texts, _ in fresh])
    assert _score(kind, guess, [label for _, label in fresh]) >= (0.8 if kind == "regression"
                                                                   else 0.9)
    if kind == "regression":
        assert all(isinstance(value, float) for value in guess)
    else:
        assert set(guess) == {"0", "1"}


def test_pair_model_reads_the_second_sentence_not_just_any_marker(trained):
    decoys = [(texts, label) for texts, label in examples("pair", 600, seed=8)
              if (MARKER in texts[0].split()) != (MARKER in texts[1].split())]
    assert {label for _, label in decoys} == {"0", "1"}
    guess = predict(trained["pair"], [texts for texts, _ in decoys])
    assert _score("pair", guess, [label for _, label in decoys]) >= 0.9


@pytest.mark.parametrize("kind", KINDS)
def test_examples_are_deterministic_and_shaped_as_documented(kind):
    made = examples(kind, 400, seed=3)
    assert made == examples(kind, 400, seed=3) != examples(kind, 400, seed=4)
    assert all(len(texts) == (1 if kind == "single" else 2) for texts, _ in made)
    assert all(4 <= len(text.split()) <= 10 for texts, _ in made for text in texts)
    labels = [label for _, label in made]
    if kind == "regression":
        assert all(0 <= label <= 5 and label == round(label, 3) for label in labels)
        assert min(labels) < 1 and max(labels) > 4
    else:
        assert 0.4 <= labels.count("1") / len(labels) <= 0.6
        assert set(labels) == {"0", "1"}


def test_label_names_reorder_the_outputs(tmp_path):
    folder = train_checkpoint(tmp_path, "single", label_names=("1", "0"))
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "1", "1": "0"} and config["label2id"] == {"1": 0, "0": 1}
    fresh = examples("single", FRESH, seed=9)
    guess = predict(folder, [texts for texts, _ in fresh])
    assert _score("single", guess, [label for _, label in fresh]) >= 0.9
    positive = [texts for texts, label in fresh if label == "1"]
    assert set(_argmax(folder, positive)) == {0}


def _argmax(folder, texts):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        logits = model(**tokenizer([t[0] for t in texts], padding=True, return_tensors="pt")).logits
    return logits.argmax(-1).tolist()


def test_default_labels_keep_transformers_names_and_mean_the_index(trained):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(trained["single"]))
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1"}
    positive = [texts for texts, label in examples("single", 100, seed=10) if label == "1"]
    assert set(_argmax(trained["single"], positive)) == {1}
    regression = AutoConfig.from_pretrained(str(trained["regression"]))
    assert regression.num_labels == 1 and regression.problem_type == "regression"


def test_label_names_are_refused_where_they_cannot_apply(tmp_path):
    with pytest.raises(ValueError, match="label_names"):
        train_checkpoint(tmp_path / "r", "regression", label_names=("score",), steps=1)
    with pytest.raises(ValueError, match="kind"):
        train_checkpoint(tmp_path / "x", "triple", steps=1)


def test_same_seed_same_weights(tmp_path):
    first = train_checkpoint(tmp_path / "a", "pair", seed=5, steps=20)
    again = train_checkpoint(tmp_path / "b", "pair", seed=5, steps=20)
    other = train_checkpoint(tmp_path / "c", "pair", seed=6, steps=20)
    weights = [load_file(folder / "model.safetensors") for folder in (first, again, other)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_unsafe_serialization_writes_pytorch_model_bin_only(tmp_path):
    folder = train_checkpoint(tmp_path, "regression", safe_serialization=False, steps=50)
    names = {path.name for path in folder.iterdir()}
    assert "pytorch_model.bin" in names and not any(n.endswith(".safetensors") for n in names)
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    assert "classifier.weight" in state and state["classifier.weight"].shape == (1, 32)
    assert len(predict(folder, [("the cat", "a dog")])) == 1


def test_tokenizer_loads_with_auto_and_splits_pairs_by_segment(trained):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(trained["pair"]))
    encoded = tokenizer("The CAT runs", "a zebra sits")
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens == ["[CLS]", "the", "cat", "runs", "[SEP]", "a", "zebra", "sits", "[SEP]"]
    assert encoded["token_type_ids"] == [0] * 5 + [1] * 4
    assert tokenizer.convert_ids_to_tokens(tokenizer("unicorn")["input_ids"])[1] == "[UNK]"
    assert (trained["pair"] / "vocab.txt").read_text().split("\n")[:5] == [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


OLD_PREDICT = """
import json, sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
folder, texts = sys.argv[1], json.loads(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
encoded = tokenizer(*[list(c) for c in zip(*texts)], truncation=True, padding="max_length",
                    max_length=32, return_tensors="pt")
with torch.no_grad():
    logits = model(**encoded).logits
print(json.dumps({"logits": logits.tolist(), "id2label": model.config.id2label}))
"""


def test_transformers_4_18_reads_the_bin_checkpoint_and_agrees(tmp_path, jetson_python):
    folder = train_checkpoint(tmp_path, "pair", label_names=("1", "0"), safe_serialization=False)
    texts = [texts for texts, _ in examples("pair", 40, seed=11)]
    done = subprocess.run([jetson_python, "-c", OLD_PREDICT, str(folder), json.dumps(texts)],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr
    assert "were not used" not in done.stderr and "newly initialized" not in done.stderr
    old = json.loads(done.stdout)
    assert old["id2label"] == {"0": "1", "1": "0"}
    names = [old["id2label"][str(max(range(2), key=row.__getitem__))] for row in old["logits"]]
    assert names == predict(folder, texts)
