"""Fine-tuned GLUE-style checkpoints made inside a test, in a few seconds on one CPU core, and the
tests' own reference predictions on them.

The toy tasks and the training are farm's own (farm.glue.sample, which also writes the toy GLUE
sample): a tiny BERT learns a task whose answer hangs on a marker word, and its folder is what a
real fine-tuned model looks like on disk, so that farm's loading path runs for real on a model
nobody has seen before. What stays here is test-only: predict(), straight from transformers.
"""
from __future__ import annotations

from pathlib import Path

from farm.glue.sample import MARKER, examples, one_thread, train_checkpoint, write_tokenizer

# The kinds test_glue_checkpoints checks as two-class or regression tasks; farm.glue.sample's
# three-class "nli" kind is checked by test_glue_sample.
KINDS = ("single", "pair", "regression")
# The names exit_checkpoints and bench/fidelity.py import.
_one_thread, _tokenizer = one_thread, write_tokenizer

__all__ = ["KINDS", "MARKER", "examples", "predict", "train_checkpoint"]


def _names(config) -> list[str] | None:
    names = [config.id2label[i] for i in range(config.num_labels)]
    return None if names == [f"LABEL_{i}" for i in range(config.num_labels)] else names


def predict(folder: Path, texts: list[tuple[str, ...]], max_length: int = 32) -> list:
    """Reference predictions straight from transformers: class names, or the regression float."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    columns = [list(column) for column in zip(*texts)]
    encoded = tokenizer(*columns, truncation=True, padding="max_length", max_length=max_length,
                        return_tensors="pt")
    with one_thread(), torch.no_grad():
        logits = model(**encoded).logits
    if model.config.num_labels == 1:
        return [float(value) for value in logits[:, 0]]
    names = _names(model.config)
    return [names[i] if names else str(i) for i in logits.argmax(-1).tolist()]
